"""`contriever ann-build`: build an approximate FAISS index from an index folder's shards."""

from __future__ import annotations

import argparse

from contriever.cli.argtypes import non_negative_int, positive_int
from contriever.errors import UsageError


def cmd_ann_build(args: argparse.Namespace) -> int:
    from contriever.retrieval.ann import AnnIndex, build_ann

    try:
        path = build_ann(
            args.index,
            args.factory,
            name=args.name,
            train_size=args.train_size,
            seed=args.seed,
            on_disk=not args.in_memory,
        )
    except ValueError as error:  # a bad factory, too few vectors, a PQ not dividing dim: exit code 2
        raise UsageError(str(error)) from None
    info, sizes = (index := AnnIndex.load(args.index, path.name)).info, index.sizes()
    print(
        f"built {args.factory} over {info['count']} vectors in {info['build_s']:.1f} s: {path} "
        f"(in RAM: {sizes['header'] / 2**20:.1f} MiB; lists on disk: {sizes['lists'] / 2**20:.1f} MiB). "
        f"Search it with `contriever search --index {args.index} --ann {path.name}`"
    )
    return 0


def add_subcommand(sub, make_subcommand) -> None:
    p = make_subcommand(
        sub,
        "ann-build",
        "build an approximate FAISS index (HNSW, IVF, IVF-PQ, OPQ) from an index folder's shards",
        'contriever ann-build --index indexes/scifact --factory "IVF256,PQ48"',
        cmd_ann_build,
    )
    p.add_argument("--index", required=True, help="index folder made by `contriever index`")
    p.add_argument(
        "--factory", required=True, help='FAISS index_factory string, e.g. "HNSW32", "OPQ48,IVF4096,PQ48"'
    )
    p.add_argument("--name", help="folder name under IDX/ann/; None: from the factory, e.g. IVF4096_PQ48")
    p.add_argument(
        "--train-size", type=positive_int, help="rows sampled for training; None: ~64 per IVF list"
    )
    p.add_argument("--seed", type=non_negative_int, default=0, help="seed of the training sample")
    p.add_argument(
        "--in-memory", action="store_true", help="IVF lists inside index.faiss, read into RAM (else on disk)"
    )
