"""Gradient caching: the in-batch loss of a batch far larger than activation memory allows.

The contrastive loss couples every query with every key, so the batch cannot simply be split into
independent micro-batches. Gao et al. (2021, "Scaling Deep Contrastive Learning Batch Size under
Memory Limited Setup") observed that the loss only needs the *embeddings* of the whole batch, which
are small. So:

1. encode the batch chunk by chunk without a graph (cheap in memory), remembering each chunk's
   random-number state;
2. compute the loss on the full-batch embeddings and backpropagate to them only: `dL/d embedding`;
3. re-encode each chunk with a graph, replaying its random state so dropout draws the same masks,
   and backpropagate `embedding.backward(dL/d embedding)`; the graph of one chunk lives at a time.

The parameter gradients are those of a plain step that encodes the same chunks with a graph from the
same random state, at the price of a second forward pass. This is what sentence-transformers'
`CachedMultipleNegativesRankingLoss(mini_batch_size=...)` and Tevatron's `--grad_cache` do.

`gradcache_loss` runs steps 1 and 2 and returns the loss; step 3 runs in a hook when the caller calls
`loss.backward()`, so gradient caching is an option of the loss (`InBatchLoss(gradcache_chunk=...)`),
invisible to the training loop.

Autocast: wrap the call in `torch.autocast(...)`; both forward passes run under it (step 3 re-enters
the same autocast state), the backward passes outside it (as torch recommends).

Several processes: the loss function may gather keys across processes (`InBatchLoss` does); its
backward in step 2 then runs the collective on every process together, and step 3 is local. The
trainer averages the gradients afterwards with `all_reduce_gradients`. If the encoder is wrapped in
`DistributedDataParallel` instead, each chunk's backward would all-reduce; this function therefore
runs all but the last chunk's backward under the wrapper's `no_sync()` when it has one.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import contextmanager, nullcontext
from functools import partial

import torch


class RandomState:
    """The CPU and CUDA random-number states at one moment, to be replayed later."""

    def __init__(self, devices: list[int]):
        self.devices = devices
        self.cpu = torch.get_rng_state()
        self.cuda = [torch.cuda.get_rng_state(d) for d in devices]

    @contextmanager
    def replay(self):
        """A context in which the generators start from the saved states; restored afterwards."""
        with torch.random.fork_rng(devices=self.devices):
            torch.set_rng_state(self.cpu)
            for device, cuda_state in zip(self.devices, self.cuda):
                torch.cuda.set_rng_state(cuda_state, device)
            yield


def _cuda_devices(module: torch.nn.Module) -> list[int]:
    return sorted({p.device.index or 0 for p in module.parameters() if p.device.type == "cuda"})


def _no_autocast(device: torch.device):
    return torch.autocast(device_type=device.type, enabled=False)


def _chunks(inputs: dict[str, torch.Tensor], size: int) -> list[dict[str, torch.Tensor]]:
    n = len(next(iter(inputs.values())))
    return [{name: t[start : start + size] for name, t in inputs.items()} for start in range(0, n, size)]


def gradcache_loss(
    encoder: torch.nn.Module,
    q_inputs: dict[str, torch.Tensor],
    k_inputs: dict[str, torch.Tensor],
    loss_fn: Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, dict]],
    chunk_size: int,
) -> tuple[torch.Tensor, dict]:
    """`loss_fn(encoder(q), encoder(k))`, encoded `chunk_size` rows at a time; `.backward()` as usual.

    `q_inputs` / `k_inputs`: keyword arguments of `encoder` (`input_ids`, `attention_mask`), with
    the batch on dim 0 (k may have more rows than q: extra negatives). `loss_fn(q, k) -> (loss,
    stats)`, e.g. `InBatchLoss.scored`. Steps 1 and 2 run here; the returned loss carries a hook
    (as sentence-transformers' `CachedMultipleNegativesRankingLoss` does) that runs step 3 when the
    caller calls `loss.backward()` (scaled by whatever the caller multiplied the loss by), adding
    to existing gradients like any backward pass.
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be at least 1, got {chunk_size}")
    devices = _cuda_devices(encoder)
    q_chunks = _chunks(q_inputs, chunk_size)
    chunks = q_chunks + _chunks(k_inputs, chunk_size)
    n_q_chunks = len(q_chunks)

    # Step 1: embeddings of every chunk, without a graph, and each chunk's random state.
    states, embeddings = [], []
    with torch.no_grad():
        for chunk in chunks:
            states.append(RandomState(devices))
            embeddings.append(encoder(**chunk))

    # Step 2: the loss on the whole batch, differentiated down to the embeddings only.
    q = torch.cat(embeddings[:n_q_chunks]).detach().requires_grad_()
    k = torch.cat(embeddings[n_q_chunks:]).detach().requires_grad_()
    loss, stats = loss_fn(q, k)
    with _no_autocast(loss.device):  # backward passes run outside autocast, as torch recommends
        loss.backward()
    q_grad = q.grad if q.grad is not None else torch.zeros_like(q)
    k_grad = k.grad if k.grad is not None else torch.zeros_like(k)
    cached = list(q_grad.split(chunk_size)) + list(k_grad.split(chunk_size))

    # Step 3 waits for the caller's backward(); it re-encodes under the autocast state of step 1.
    device_type = loss.device.type
    autocast = (device_type, torch.get_autocast_dtype(device_type), torch.is_autocast_enabled(device_type))
    loss = loss.detach().requires_grad_()
    loss.register_hook(partial(_replay_backward, encoder, chunks, states, cached, autocast))
    return loss, stats


def _replay_backward(encoder, chunks, states, cached, autocast, grad_output: torch.Tensor) -> None:
    """Step 3: each chunk again, with a graph and the same dropout masks; chain rule into the weights."""
    device_type, dtype, enabled = autocast
    no_sync = getattr(encoder, "no_sync", None)
    with torch.enable_grad():
        for i, (chunk, state, grad) in enumerate(zip(chunks, states, cached)):
            last = i == len(chunks) - 1
            with state.replay(), no_sync() if no_sync is not None and not last else nullcontext():
                with torch.autocast(device_type=device_type, dtype=dtype, enabled=enabled):
                    vectors = encoder(**chunk)
                with _no_autocast(vectors.device):
                    vectors.backward(grad * grad_output)
