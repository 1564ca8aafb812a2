"""Evaluation during training: retrieval metrics of the encoder as it is at that step.

Pretraining evaluates on a BEIR folder's split (e.g. SciFact test); fine-tuning evaluates on its dev
queries against the full corpus. Either way the model is put in eval mode and encodes with the same
length-sorted, autocast path as `contriever evaluate`.
"""

from __future__ import annotations

from collections.abc import Callable

from contriever.model.encoder import Encoder
from contriever.training.config import EvalConfig


def retrieval_evaluator(
    corpus: dict, queries: dict, qrels: dict, *, batch_size: int = 128, max_length: int = 256, k: int = 100
) -> Callable[[Encoder], dict]:
    """A function `encoder -> {"ndcg@10", "recall@100", "mrr@10", ...}` over fixed data."""
    from contriever.evaluation.metrics import evaluate_run
    from contriever.retrieval.retrieve import dense_retrieve
    from contriever.retrieval.settings import EncodingSettings

    queries = {qid: text for qid, text in queries.items() if qid in qrels}

    def evaluate(encoder: Encoder) -> dict:
        saved = encoder.max_length
        encoder.max_length = max_length
        try:
            encoding = EncodingSettings(batch_size=batch_size)
            run = dense_retrieve(encoder, corpus, queries, k, encoding, show_progress=False)
        finally:
            encoder.max_length = saved
        metrics = evaluate_run(qrels, run)
        return {name: metrics[name] for name in ("ndcg@10", "recall@100", "mrr@10")}

    return evaluate


def beir_evaluator(config: EvalConfig) -> Callable[[Encoder], dict]:
    from contriever.data.beir import load_beir

    corpus, queries, qrels = load_beir(config.data, split=config.split)
    return retrieval_evaluator(
        corpus, queries, qrels, batch_size=config.batch_size, max_length=config.max_length
    )
