"""The paper's fine-tuning recipe as one command, on the one trainer.

Round 1 trains with in-batch negatives plus `finetune.n_negatives` random extra negatives per query
(paper: one; its few-shot runs: none). Its model then mines hard negatives for every training query
(top-ranked documents that are not labelled positive, optionally skipping the very top). Round 2
trains again from the same starting model with at least one extra negative per query (that is where
mined ones go, even when round 1 used in-batch negatives alone), each one mined with probability
`finetune.hard_negative_prob` (paper: 0.1), else random.
Either round also runs alone (`--rounds 1`, or a config whose `finetune.train` is a mined file).
"""

from __future__ import annotations

import copy
from pathlib import Path

from contriever.training.config import Config
from contriever.training.trainer import train

ROUND2_HARD_NEGATIVE_PROB = 0.1  # the paper's share of hard negatives in round 2


def run_finetune(
    config: Config, output: str | Path, rounds: int = 2, mine_k: int = 100, skip_top: int = 0
) -> Path:
    output = Path(output)
    if rounds == 1:
        return train(config, output)

    first = copy.deepcopy(config)
    first.finetune.hard_negative_prob = 0.0
    round1 = train(first, output / "round1")

    from contriever.retrieval.mining import mine_beir

    train_source = Path(config.finetune.train)
    mined = output / "round1" / "hard_negatives.jsonl"
    if not mined.exists():
        mine_beir(
            train_source,
            model=str(round1),
            output=mined,
            split=config.finetune.split,
            k=mine_k,
            skip_top=skip_top,
        )

    second = copy.deepcopy(config)
    second.finetune.train = str(mined)
    second.finetune.corpus = config.finetune.corpus or str(train_source)
    second.finetune.hard_negative_prob = config.finetune.hard_negative_prob or ROUND2_HARD_NEGATIVE_PROB
    second.finetune.n_negatives = max(config.finetune.n_negatives, 1)
    return train(second, output / "round2")
