"""Batch sources for the trainer: each gives `next_batch()` token tensors and checkpointable state.

A batch is a dict of `q_ids`, `q_mask` (one row per query) and `k_ids`, `k_mask` laid out as
[positives (B rows), then each extra negative slot (B rows each)]: key i is query i's positive.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from contriever.data.augment import PairSettings, make_pair, special_ids_from_tokenizer
from contriever.data.sampling import ChunkSampler, ChunkSettings
from contriever.model.encoder import pad_batch
from contriever.training.config import Config


def with_prompt(view: np.ndarray, prompt: list[int], bos_id: int | None) -> np.ndarray:
    """`view` (token ids with special tokens) with `prompt`'s ids after its first special token (or
    first, for a tokenizer without one): what tokenizing `prompt + text` gives, to a word boundary.
    The prompt's tokens come on top of `max_view_length`."""
    if not prompt:
        return view
    at = 1 if bos_id is not None and len(view) and view[0] == bos_id else 0
    return np.concatenate([view[:at], np.asarray(prompt, dtype=view.dtype), view[at:]])


class PretrainBatches:
    """Positive pairs cut from random chunks of prepared token streams (crop or ICT, plus augmentation)."""

    def __init__(
        self,
        config: Config,
        tokenizer,
        local_batch: int,
        rank: int,
        world_size: int,
        prompt_ids: dict[str, list[int]] | None = None,
    ):
        data = config.data
        # the model's prompts as token ids: query views get the query prompt, key views the passage one
        self.prompt_ids = {name: list(ids) for name, ids in (prompt_ids or {}).items() if ids}
        if not data.folders:
            from contriever.errors import ConfigError

            raise ConfigError("data.folders is empty: name the folders written by `contriever prepare`")
        self.config = config
        self.batch_size = local_batch
        self.pad_id = tokenizer.pad_token_id
        chunking = ChunkSettings(
            chunk_length=data.chunk_length,
            within_documents=data.within_documents,
            mix_exponent=data.mix_exponent,
            mix_unit=data.mix_unit,
            min_doc_length=data.min_doc_length,
        )
        self.sampler = ChunkSampler(
            [Path(f) for f in data.folders], chunking, config.train.seed, rank, world_size
        )
        for source in self.sampler.sources:
            source.dataset.check_tokenizer(tokenizer)
        ids = special_ids_from_tokenizer(tokenizer)
        self.settings = PairSettings(
            method=data.method,
            ratio_min=data.ratio_min,
            ratio_max=data.ratio_max,
            ict_keep_span_prob=data.ict_keep_span_prob,
            augmentation=data.augmentation,
            augmentation_prob=data.augmentation_prob,
            max_view_length=data.max_view_length or None,
            vocab_size=len(tokenizer),
            **ids,
        )
        self.rng = np.random.default_rng([config.train.seed, rank, 17])

    def next_batch(self) -> dict:
        pairs = [make_pair(chunk, self.rng, self.settings) for chunk in self.sampler.sample(self.batch_size)]
        if self.prompt_ids:
            bos = self.settings.bos_id
            query, passage = self.prompt_ids.get("query", []), self.prompt_ids.get("passage", [])
            pairs = [(with_prompt(q, query, bos), with_prompt(k, passage, bos)) for q, k in pairs]
        q_ids, q_mask = pad_batch([q for q, _ in pairs], self.pad_id)
        k_ids, k_mask = pad_batch([k for _, k in pairs], self.pad_id)
        return {"q_ids": q_ids, "q_mask": q_mask, "k_ids": k_ids, "k_mask": k_mask}

    def state_dict(self) -> dict:
        return {"sampler": self.sampler.state_dict(), "rng": self.rng.bit_generator.state}

    def load_state_dict(self, state: dict) -> None:
        self.sampler.load_state_dict(state["sampler"])
        self.rng.bit_generator.state = state["rng"]

    def evaluator(self):
        """nDCG@10 etc. on `eval.data` (a BEIR folder) with the encoder as it is at that step."""
        from contriever.training.evaluator import beir_evaluator

        if not self.config.eval.data:
            return None
        return beir_evaluator(self.config.eval)


class FinetuneBatches:
    """Labelled (query, positive, extra negatives) batches, tokenized for the trainer.

    Training data (`finetune.train`): a BEIR folder's train qrels, a DPR file or a plain JSONL
    (`contriever.data.pairs`). Dev: `finetune.dev_split` of the BEIR folder, else `dev_fraction` of the
    training queries held out (whole queries). Random negatives come from `finetune.corpus` (default:
    `train` when it is a BEIR folder, else every document the examples name); hard ones from the
    examples' mined `hard_negatives` with probability `hard_negative_prob`.
    """

    def __init__(self, config: Config, encoder, local_batch: int, rank: int, world_size: int):
        from contriever.data.beir import load_corpus, load_qrels, load_queries
        from contriever.data.dev import dev_set, sample_dev_corpus, split_dev
        from contriever.data.negatives import ExampleBatcher, NegativeSampler, corpus_from_examples
        from contriever.data.pairs import is_beir_folder, load_training_data
        from contriever.errors import ConfigError

        data = config.finetune
        if not data.train:
            raise ConfigError(
                "finetune.train is empty: name a BEIR folder or a training file (--set finetune.train=PATH)"
            )
        self.data = data
        self.encoder = encoder
        self.eval_config = config.eval
        corpus_folder = Path(data.corpus) if data.corpus else Path(data.train)
        self.corpus = load_corpus(corpus_folder) if is_beir_folder(corpus_folder) else None
        examples = load_training_data(data.train, data.split, corpus=self.corpus)
        if data.dev_split:
            if self.corpus is None:
                raise ConfigError(
                    "finetune.dev_split needs a BEIR folder in finetune.corpus or finetune.train"
                )
            self.train_examples = examples
            queries = load_queries(corpus_folder)
            qrels = load_qrels(corpus_folder, data.dev_split)
            self.dev_corpus = self.corpus
            self.dev_queries = {qid: queries[qid] for qid in qrels if qid in queries}
            self.dev_qrels = qrels
        else:
            self.train_examples, dev = split_dev(examples, data.dev_fraction, seed=config.train.seed)
            self.dev_corpus, self.dev_queries, self.dev_qrels = dev_set(dev, self.corpus, examples)
        if data.dev_corpus_size:
            self.dev_corpus = sample_dev_corpus(
                self.dev_corpus, self.dev_qrels, data.dev_corpus_size, seed=config.train.seed
            )
        pool = self.corpus if self.corpus is not None else corpus_from_examples(examples)
        sampler = NegativeSampler(
            pool,
            hard_negative_prob=data.hard_negative_prob or 0.0,
            n_negatives=data.n_negatives,
            seed=config.train.seed,
            hard_negative_min_index=data.hard_negative_min_index,
        )
        self.batcher = ExampleBatcher(
            self.train_examples,
            local_batch * world_size,
            sampler,
            seed=config.train.seed,
            rank=rank,
            world_size=world_size,
        )

    def next_batch(self) -> dict:
        batch = self.batcher.next_batch()
        queries = self.encoder.tokenize(batch.queries, self.data.query_max_length, prompt_name="query")
        q_ids, q_mask = self.encoder.collate(queries)
        keys = self.encoder.tokenize(
            batch.positives + batch.negatives, self.data.doc_max_length, prompt_name="passage"
        )
        k_ids, k_mask = self.encoder.collate(keys)
        return {"q_ids": q_ids, "q_mask": q_mask, "k_ids": k_ids, "k_mask": k_mask}

    def state_dict(self) -> dict:
        return self.batcher.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.batcher.load_state_dict(state)

    def evaluator(self):
        """Dev-set retrieval over the corpus (or, without one, over every document the examples name)."""
        from contriever.training.evaluator import retrieval_evaluator

        if not self.dev_qrels:
            return None
        return retrieval_evaluator(
            self.dev_corpus,
            self.dev_queries,
            self.dev_qrels,
            batch_size=self.eval_config.batch_size,
            max_length=self.eval_config.max_length,
        )
