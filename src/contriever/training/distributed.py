"""Several processes, one model: torchrun set-up and the few collectives training needs.

Launch with `torchrun --nproc_per_node N -m contriever.cli.main pretrain ...` (or `finetune`): torchrun sets `RANK`,
`WORLD_SIZE`, `LOCAL_RANK`, `MASTER_ADDR` and `MASTER_PORT`, and `setup_distributed()` reads them
(gloo on CPU, nccl on CUDA). Without torchrun everything here is a no-op on one process, so the same
training code runs on a laptop and on a cluster.

How the gradients add up (the trainer does not use DDP; it calls `all_reduce_gradients`, which
averages gradients over processes exactly as DDP does):

* Each process computes the mean loss over its own `B` queries, `L_p`. The loss of the global batch
  of `P * B` queries is `L = (1/P) * sum_p L_p`.
* `all_gather_with_grad` lets each process score its queries against everyone's keys. In the
  backward pass it sums, over processes, the gradient that reaches each key and hands every process
  the slice for its own keys. So process `r` gets `dL_r/dθ` through its queries plus
  `sum_p dL_p/dθ` through its keys; summed over `r` that is `sum_p dL_p/dθ` along every path.
* Averaging over processes then gives `(1/P) * sum_p dL_p/dθ = dL/dθ`: the gradient of one process
  with the whole batch. No extra loss scaling is needed (implementations whose gather does *not* sum
  gradients in its backward multiply the loss by `P` instead; the two are equivalent).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class DistInfo:
    """Where this process stands: its rank among `world_size`, its GPU (if any), whether it logs."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    is_main: bool = True

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1


def is_distributed() -> bool:
    """Whether a process group with more than one process is running."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def get_rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def get_world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def setup_distributed(backend: str | None = None) -> DistInfo:
    """Join the process group torchrun describes in the environment, or run as a single process.

    `backend`: None picks nccl when CUDA is available and gloo otherwise. Each process takes the GPU
    `cuda:LOCAL_RANK`. Calling it again after the group exists just reports the group.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = torch.cuda.is_available()
    if cuda:
        device = torch.device("cuda", local_rank % torch.cuda.device_count())
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    if world_size > 1 and not dist.is_initialized():
        if "MASTER_ADDR" not in os.environ or "MASTER_PORT" not in os.environ:
            raise RuntimeError(
                f"WORLD_SIZE={world_size} but MASTER_ADDR/MASTER_PORT are not set: launch with torchrun"
            )
        backend = backend or ("nccl" if cuda else "gloo")
        # Naming the GPU binds nccl's communicator to it up front (no guessing in barriers).
        extra = {"device_id": device} if backend == "nccl" else {}
        dist.init_process_group(
            backend=backend, init_method="env://", rank=rank, world_size=world_size, **extra
        )
        _JOINED.add(os.getpid())
    if dist.is_available() and dist.is_initialized():
        rank, world_size = dist.get_rank(), dist.get_world_size()
    return DistInfo(rank=rank, world_size=world_size, local_rank=local_rank, device=device, is_main=rank == 0)


_JOINED: set[int] = set()  # the process that `setup_distributed` made a process group in, if it made one


def leave_process_group() -> None:
    """Leave the process group `setup_distributed` joined, after a barrier so that no process leaves
    while another still talks to it (one a caller made is theirs to leave). Left to interpreter exit,
    gloo's threads are torn down in whatever order exit takes, likely what once aborted a finished
    run in the test suite ("terminate called without an active exception", SIGABRT: torchrun then
    reports the run failed)."""
    if os.getpid() in _JOINED and dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
    _JOINED.clear()


# ----- gathering tensors ------------------------------------------------------------------------------
class _AllGatherWithGrad(torch.autograd.Function):
    """Concatenate every process's tensor along dim 0; gradients go back to their owners, summed."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        world_size, rank = dist.get_world_size(), dist.get_rank()
        ctx.rank, ctx.rows = rank, tensor.shape[0]
        parts = [torch.empty_like(tensor) for _ in range(world_size)]
        dist.all_gather(parts, tensor.contiguous())
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        # Every process's loss may depend on our keys: sum their gradients, keep our rows.
        grad = grad.clone(memory_format=torch.contiguous_format)  # never write into autograd's buffer
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad[ctx.rank * ctx.rows : (ctx.rank + 1) * ctx.rows]


def all_gather_with_grad(tensor: torch.Tensor) -> torch.Tensor:
    """`[n, ...]` on each of P processes -> `[P * n, ...]` in rank order, differentiable.

    The backward pass all-reduces (sums) the incoming gradient and returns this process's rows, so
    with gradients then *averaged* over processes the result equals one process with the whole
    batch (see the module docstring). Every process must pass the same shape. One process: identity.
    """
    if not is_distributed():
        return tensor
    return _AllGatherWithGrad.apply(tensor)


@torch.no_grad()
def all_gather_no_grad(tensor: torch.Tensor) -> torch.Tensor:
    """`[n, ...]` on each of P processes -> `[P * n, ...]` in rank order, without gradient."""
    if not is_distributed():
        return tensor.detach()
    parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, tensor.detach().contiguous())
    return torch.cat(parts, dim=0)


# ----- reducing numbers and gradients ---------------------------------------------------------------
def all_reduce_mean(value, dist_info: DistInfo | None = None):
    """Mean over processes of a float or a tensor (returned as the same kind). One process: as is."""
    if not is_distributed():
        return value
    if isinstance(value, torch.Tensor):
        out = value.detach().clone()
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
        return out / dist.get_world_size()
    device = dist_info.device if dist_info is not None else _collective_device()
    out = torch.tensor(float(value), dtype=torch.float64, device=device)
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return float(out) / dist.get_world_size()


def _collective_device() -> torch.device:
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


@torch.no_grad()
def all_reduce_gradients(
    model: torch.nn.Module | Iterable[torch.nn.Parameter],
    dist_info: DistInfo | None = None,
    bucket_mb: float = 64.0,
) -> None:
    """Average `.grad` over processes, as DDP would (call after backward, before clipping/stepping).

    Gradients are flattened into buckets of about `bucket_mb` MB per dtype so a BERT's ~200 tensors
    travel in a few collectives. A parameter with a gradient on some process but not on another gets
    a zero gradient where it is missing (one small extra collective agrees on which ones).
    """
    if not is_distributed():
        return
    params = list(model.parameters() if isinstance(model, torch.nn.Module) else model)
    params = [p for p in params if p.requires_grad]
    if not params:
        return
    world_size = dist.get_world_size()
    device = params[0].device
    has_grad = torch.tensor([p.grad is not None for p in params], dtype=torch.uint8, device=device)
    dist.all_reduce(has_grad, op=dist.ReduceOp.MAX)
    grads = []
    for p, present in zip(params, has_grad.tolist()):
        if present:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            grads.append(p.grad)
    buckets: dict[tuple, list[list[torch.Tensor]]] = {}
    sizes: dict[tuple, int] = {}  # bytes in each dtype's last bucket
    limit = bucket_mb * 2**20
    for g in grads:
        key = (g.dtype, g.device)
        lists = buckets.setdefault(key, [[]])
        nbytes = g.numel() * g.element_size()
        if lists[-1] and sizes[key] + nbytes > limit:
            lists.append([])
            sizes[key] = 0
        lists[-1].append(g)
        sizes[key] = sizes.get(key, 0) + nbytes
    for lists in buckets.values():
        for bucket in lists:
            flat = torch.cat([g.reshape(-1) for g in bucket])
            dist.all_reduce(flat, op=dist.ReduceOp.SUM)
            flat.div_(world_size)
            offset = 0
            for g in bucket:
                g.copy_(flat[offset : offset + g.numel()].view_as(g))
                offset += g.numel()


# ----- python objects -----------------------------------------------------------------------------
def broadcast_object(obj, src: int = 0):
    """Process `src`'s object on every process (any picklable object)."""
    if not is_distributed():
        return obj
    holder = [obj]
    dist.broadcast_object_list(holder, src=src)
    return holder[0]


def gather_objects(obj) -> list:
    """Every process's object, in rank order (e.g. each process's data position and RNG state)."""
    if not is_distributed():
        return [obj]
    objects = [None] * dist.get_world_size()
    dist.all_gather_object(objects, obj)
    return objects
