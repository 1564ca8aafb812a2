"""Search: `GET /search?q=...&k=10&mode=dense` and `POST /search` with a batch of queries.

Every mode returns at most k documents a query: dense searches the index k deep; BM25 asks bm25s
for k (and returns only documents sharing a term, so possibly fewer); hybrid takes both
`candidates(k)` deep (100, or k if more) and fuses them by reciprocal rank fusion, cut to k. The
retrievers are the searcher's (`contriever.retrieval.retrievers`); a request's queries are a query
set named by position, the dense ones encoded through the dynamic batcher.
"""

from __future__ import annotations

import asyncio
import time
from typing import Annotated

from fastapi import APIRouter, Query

from contriever.retrieval.runs import Run
from contriever.serving.checks import check_k, check_mode, check_texts
from contriever.serving.errors import COMMON_ERRORS, documented
from contriever.serving.schemas import Hit, SearchBatch, SearchBatchResult, SearchResult
from contriever.serving.searcher import EncodeJob
from contriever.serving.service import Service, ServiceDep

router = APIRouter(tags=["search"], responses=documented(*COMMON_ERRORS, 429, 503))
DESCRIBE_IN_THREAD = 200  # hits a request above which titles and snippets are read off the event loop


async def dense_run(service: Service, queries: dict[str, str], k: int) -> Run:
    """The dense retriever's run, the queries encoded in the batcher's shared forward passes."""
    encoded = await service.batcher.submit([EncodeJob(text, k) for text in queries.values()])
    return {name: dict(item.hits) for name, item in zip(queries, encoded)}


async def ranked_run(service: Service, queries: dict[str, str], k: int, mode: str) -> Run:
    """The best k documents of each query in `mode`; hybrid asks BM25 and dense at once."""
    searcher = service.searcher
    if mode == "dense":
        return await dense_run(service, queries, k)
    if mode == "bm25":
        return await asyncio.to_thread(searcher.bm25.retrieve, queries, k)
    depth = searcher.hybrid.candidates(k)
    dense, lexical = await asyncio.gather(
        dense_run(service, queries, depth), asyncio.to_thread(searcher.bm25.retrieve, queries, depth)
    )
    return searcher.hybrid.fuse([lexical, dense], k)  # BM25 first, as the hybrid retriever asks


async def search_many(service: Service, queries: list[str], k: int, mode: str) -> list[SearchResult]:
    start = time.perf_counter()
    named = {str(position): query for position, query in enumerate(queries)}
    run = await ranked_run(service, named, k, mode)
    searcher = service.searcher

    def describe():
        return [searcher.describe(query, list(run[name].items())) for name, query in named.items()]

    described = await asyncio.to_thread(describe) if len(queries) * k > DESCRIBE_IN_THREAD else describe()
    took = round((time.perf_counter() - start) * 1000, 3)
    return [
        SearchResult(query=query, mode=mode, k=k, hits=[Hit(**hit) for hit in found], took_ms=took)
        for query, found in zip(queries, described)
    ]


@router.get("/search", summary="Search with one query")
async def search_get(
    service: ServiceDep,
    q: Annotated[str, Query(description="the query")],
    k: Annotated[int, Query(description="documents to return (1 to --max-k)")] = 10,
    mode: Annotated[str, Query(description="dense, bm25 or hybrid")] = "dense",
) -> SearchResult:
    check_texts([q], "q", 1, service.settings.max_chars, single=True)
    check_k(k, service.settings)
    check_mode(mode, service.searcher)
    return (await search_many(service, [q], k, mode))[0]


@router.post("/search", summary="Search with a batch of queries")
async def search_post(service: ServiceDep, body: SearchBatch) -> SearchBatchResult:
    start = time.perf_counter()
    settings = service.settings
    check_texts(body.queries, "queries", settings.max_queries, settings.max_chars, "--max-queries")
    check_k(body.k, settings)
    check_mode(body.mode, service.searcher)
    results = await search_many(service, body.queries, body.k, body.mode)
    took = round((time.perf_counter() - start) * 1000, 3)
    return SearchBatchResult(mode=body.mode, k=body.k, results=results, took_ms=took)
