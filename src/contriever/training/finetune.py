"""The paper's fine-tuning recipe as one command, on the one trainer.

Round 1 trains with in-batch negatives plus `finetune.n_negatives` random extra negatives per query
(paper: one; its few-shot runs: none). Its model then mines hard negatives for every training query
(top-ranked documents that are not labelled positive, optionally skipping the very top). Round 2
trains again from the same starting model with at least one extra negative per query (that is where
mined ones go, even when round 1 used in-batch negatives alone), each one mined with probability
`finetune.hard_negative_prob` (unset: the paper's 0.1), else random.
Either round also runs alone (`--rounds 1`, or `--rounds 1` with a mined file as `finetune.train`).
"""

from __future__ import annotations

import copy
from pathlib import Path

from contriever.data.pairs import is_beir_folder
from contriever.errors import ConfigError
from contriever.training.config import Config
from contriever.training.resume import output_lock
from contriever.training.trainer import train

ROUND2_HARD_NEGATIVE_PROB = 0.1  # the paper's share of hard negatives in round 2


def run_finetune(
    config: Config, output: str | Path, rounds: int = 2, mine_k: int = 100, skip_top: int = 0
) -> Path:
    """Fine-tune per `config` into `output`; returns the folder of the model to use.

    `rounds=1`: one training run in `output` itself (`finetune.train` may be any training data).
    `rounds=2`: round 1 in `output/round1` (random negatives only), hard negatives mined with its
    model for every training query into `output/round1/hard_negatives.jsonl` (the `mine_k` top
    documents, the first `skip_top` non-positives skipped; kept when it already exists, so a rerun
    resumes), then round 2 from the same starting model in `output/round2`. Mining needs the BEIR
    folder's qrels and corpus, so with two rounds `finetune.train` must be a BEIR folder: anything
    else is an error before round 1 starts. One run at a time holds `output` (`resume.output_lock`).
    """
    if rounds == 2 and not is_beir_folder(Path(config.finetune.train or "")):  # before any folder is made
        raise ConfigError(
            f"finetune.train {config.finetune.train!r}: two rounds mine hard negatives from a BEIR folder "
            "(queries, corpus, qrels); to train on a file of examples (a mined one included) use --rounds 1"
        )
    with output_lock(output, "finetune"):
        return _run_rounds(config, Path(output), rounds, mine_k, skip_top)


def _run_rounds(config: Config, output: Path, rounds: int, mine_k: int, skip_top: int) -> Path:
    if rounds == 1:
        return train(config, output)
    train_source = Path(config.finetune.train or "")

    first = copy.deepcopy(config)
    first.finetune.hard_negative_prob = 0.0
    round1 = train(first, output / "round1")

    from contriever.retrieval.mining import mine_beir

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
    chosen = config.finetune.hard_negative_prob
    second.finetune.hard_negative_prob = ROUND2_HARD_NEGATIVE_PROB if chosen is None else chosen
    second.finetune.n_negatives = max(config.finetune.n_negatives, 1)
    return train(second, output / "round2")
