"""Random chunks of token ids from prepared token streams (`contriever prepare`), exactly resumable.

`ChunkSampler(folders, ChunkSettings(chunk_length=256, ...), seed, rank, world_size)`. Each chunk is
drawn in three steps:

1. a source (one prepared folder), with probability proportional to n_tokens ** mix_exponent:
   0 gives every source the same share (the paper's "50/50" mix of Wikipedia and CCNet),
   1 samples uniformly over the union of all tokens, values between interpolate;
2. a position, uniform over this process's part of the source;
3. the chunk: `chunk_length` tokens from there.

`within_documents=False` (the paper's reference behaviour): the source is one flat stream and a chunk
may run across a document boundary. `within_documents=True`: a document is chosen with probability
proportional to its length (so every token is equally likely), and the chunk is a window inside it;
documents shorter than `chunk_length` give shorter chunks, documents shorter than `min_doc_length`
(default 8) are never chosen.

`mix_unit="chunk"` draws the source per chunk; `mix_unit="batch"` draws one source per `sample(n)`
call, so a whole (local) batch comes from one source, as in the paper's appendix ("half the batches
are sampled from each source").

Data parallelism: every source is cut into `world_size` contiguous parts (of about equal token count,
at document boundaries when within_documents) and process `rank` samples only from part `rank`.

Determinism: every random number comes from one numpy Generator (PCG64) seeded with (seed, rank).
With mix_unit="chunk", `sample(8)` equals `sample(4) + sample(4)`. `state_dict()` (JSON-serialisable)
and `load_state_dict()` capture the generator, so a resumed run draws what an uninterrupted one would.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from contriever.data.prepare import TokenDataset

MIX_UNITS = ("chunk", "batch")
STATE_VERSION = 1


@dataclass
class _Source:
    """One prepared folder as this rank sees it."""

    dataset: TokenDataset
    lo: int  # flat mode: this rank's token range [lo, hi)
    hi: int
    doc_starts: np.ndarray | None = None  # within_documents: eligible docs of this rank (start, length)
    doc_lengths: np.ndarray | None = None
    doc_cumulative: np.ndarray | None = None  # cumsum of doc_lengths

    @property
    def span(self) -> int:
        """How many tokens this rank draws positions from."""
        return int(self.doc_cumulative[-1]) if self.doc_cumulative is not None else self.hi - self.lo


def rank_token_range(n_tokens: int, rank: int, world_size: int) -> tuple[int, int]:
    """Part `rank` of `world_size` contiguous, near-equal parts of [0, n_tokens)."""
    return n_tokens * rank // world_size, n_tokens * (rank + 1) // world_size


def rank_document_range(offsets: np.ndarray, rank: int, world_size: int) -> tuple[int, int]:
    """Documents [first, last) of part `rank`: cut where the cumulative token count crosses k/world_size."""
    n_docs, n_tokens = len(offsets) - 1, int(offsets[-1])

    def cut(k: int) -> int:
        if k >= world_size:
            return n_docs
        return int(np.searchsorted(offsets[:-1], n_tokens * k // world_size, side="left"))

    return cut(rank), cut(rank + 1)


def source_probabilities(sizes: list[int], mix_exponent: float) -> np.ndarray:
    """p_s proportional to size_s ** mix_exponent (0: equal shares; 1: proportional to size)."""
    sizes_array = np.asarray(sizes, dtype=np.float64)
    weights = sizes_array**mix_exponent
    return weights / weights.sum()


@dataclass(frozen=True)
class ChunkSettings:
    """How chunks are drawn: chunk_length=256 (paper), within_documents=False (reference),
    mix_exponent=0.0 (50/50), mix_unit="chunk", min_doc_length=8 (within_documents only)."""

    chunk_length: int = 256
    within_documents: bool = False
    mix_exponent: float = 0.0
    mix_unit: str = "chunk"
    min_doc_length: int = 8

    def __post_init__(self):
        # Plain Python values (a TOML integer mix_exponent, a numpy int): the state dict records them.
        for name, kind in (
            ("chunk_length", int),
            ("within_documents", bool),
            ("mix_exponent", float),
            ("min_doc_length", int),
        ):
            object.__setattr__(self, name, kind(getattr(self, name)))
        if self.chunk_length < 1:
            raise ValueError(f"chunk_length must be >= 1, got {self.chunk_length}")
        if self.mix_unit not in MIX_UNITS:
            raise ValueError(f"unknown mix_unit {self.mix_unit!r}; choose one of {MIX_UNITS}")
        if self.min_doc_length < 1:
            raise ValueError(f"min_doc_length must be >= 1, got {self.min_doc_length}")
        if self.mix_exponent < 0:
            raise ValueError(f"mix_exponent must be >= 0, got {self.mix_exponent}")


class ChunkSampler:
    """Random chunks (int64 arrays of token ids, no special tokens) from one or more prepared folders,
    drawn as `chunking` says, from this process's part (`rank` of `world_size`), seeded by (seed, rank).
    """

    def __init__(
        self,
        folders: list[str | os.PathLike] | str | os.PathLike,
        chunking: ChunkSettings = ChunkSettings(),
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ):
        if isinstance(folders, (str, os.PathLike)):
            folders = [folders]
        if not folders:
            raise ValueError("no token folders to sample from")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in [0, world_size={world_size})")
        self.folders = [Path(f) for f in folders]
        self.chunking = chunking
        self.seed, self.rank, self.world_size = int(seed), int(rank), int(world_size)

        datasets = [TokenDataset(f) for f in self.folders]
        self.sources = [self._source(d) for d in datasets]
        self.probabilities = source_probabilities([d.n_tokens for d in datasets], chunking.mix_exponent)
        self._cumulative = np.cumsum(self.probabilities)
        self._cumulative[-1] = 1.0
        self.rng = np.random.default_rng([self.seed, self.rank])
        self.chunks_sampled = 0

    def _source(self, dataset: TokenDataset) -> _Source:
        if not self.chunking.within_documents:
            lo, hi = rank_token_range(dataset.n_tokens, self.rank, self.world_size)
            if hi <= lo:
                raise ValueError(
                    f"{dataset.folder}: {dataset.n_tokens} tokens cannot be split over {self.world_size} ranks"
                )
            return _Source(dataset, lo, hi)
        offsets = np.asarray(dataset.offsets)
        first, last = rank_document_range(offsets, self.rank, self.world_size)
        starts = offsets[first:last]
        lengths = offsets[first + 1 : last + 1] - starts
        keep = lengths >= self.chunking.min_doc_length
        if not keep.any():
            raise ValueError(
                f"{dataset.folder}: rank {self.rank} of {self.world_size} has no document of at least "
                f"{self.chunking.min_doc_length} tokens (its part holds documents {first}..{last - 1})"
            )
        starts, lengths = starts[keep].astype(np.int64), lengths[keep].astype(np.int64)
        lo, hi = int(offsets[first]), int(offsets[last])
        return _Source(dataset, lo, hi, starts, lengths, np.cumsum(lengths))

    # ----- sampling -------------------------------------------------------------------------------
    def _chunk(self, source: _Source, u_position: float, u_start: float) -> np.ndarray:
        length = self.chunking.chunk_length
        if source.doc_cumulative is None:
            positions = max(1, source.hi - source.lo - length + 1)
            start = source.lo + min(int(u_position * positions), positions - 1)
            end = min(start + length, source.hi)
        else:
            token = min(int(u_position * source.span), source.span - 1)
            doc = int(np.searchsorted(source.doc_cumulative, token, side="right"))
            doc_length = int(source.doc_lengths[doc])
            positions = max(1, doc_length - length + 1)
            start = int(source.doc_starts[doc]) + min(int(u_start * positions), positions - 1)
            end = start + min(length, doc_length)
        return np.asarray(source.dataset.tokens[start:end], dtype=np.int64)

    def sample_with_sources(self, n: int) -> tuple[list[np.ndarray], np.ndarray]:
        """`n` chunks and the index of the source each came from."""
        if self.chunking.mix_unit == "batch":
            source_ids = np.full(n, np.searchsorted(self._cumulative, self.rng.random(), side="right"))
            u = self.rng.random((n, 2))
        else:
            draws = self.rng.random((n, 3))
            source_ids, u = np.searchsorted(self._cumulative, draws[:, 0], side="right"), draws[:, 1:]
        source_ids = np.minimum(source_ids, len(self.sources) - 1)
        chunks = [self._chunk(self.sources[s], u[i, 0], u[i, 1]) for i, s in enumerate(source_ids)]
        self.chunks_sampled += n
        return chunks, source_ids

    def sample(self, n: int) -> list[np.ndarray]:
        """`n` random chunks, each an int64 array of at most `chunk_length` token ids."""
        return self.sample_with_sources(n)[0]

    # ----- exact resume ---------------------------------------------------------------------------
    def settings(self) -> dict:
        """What must match for a saved state to continue the same stream."""
        return {
            **asdict(self.chunking),
            "seed": self.seed,
            "rank": self.rank,
            "world_size": self.world_size,
            "source_tokens": [s.dataset.n_tokens for s in self.sources],
        }

    def state_dict(self) -> dict:
        """JSON-serialisable: the generator state, the chunk count and the settings it belongs to."""
        return {
            "version": STATE_VERSION,
            "rng": self.rng.bit_generator.state,
            "chunks_sampled": self.chunks_sampled,
            "settings": self.settings(),
        }

    def load_state_dict(self, state: dict) -> None:
        """Continue from `state`; ValueError if it was saved with other settings or other data."""
        saved, current = state.get("settings", {}), self.settings()
        saved = {k: list(v) if isinstance(v, tuple) else v for k, v in saved.items()}
        different = sorted(k for k in current if saved.get(k) != current[k])
        if different:
            details = ", ".join(f"{k}: saved {saved.get(k)!r}, now {current[k]!r}" for k in different)
            raise ValueError(f"sampler state does not belong to this sampler ({details})")
        self.rng.bit_generator.state = state["rng"]
        self.chunks_sampled = int(state.get("chunks_sampled", 0))

    def __repr__(self) -> str:
        parts = ", ".join(
            f"{s.dataset.folder.name}: p={p:.3f} ({s.dataset.n_tokens:,} tokens)"
            for s, p in zip(self.sources, self.probabilities)
        )
        mode = "within documents" if self.chunking.within_documents else "across documents"
        return f"ChunkSampler({self.chunking.chunk_length} tokens, {mode}, rank {self.rank}/{self.world_size}; {parts})"
