"""MoCo: negatives from a queue of past keys, keys from a slowly moving copy of the encoder.

Contriever's pretraining objective (He et al. 2020, as used by Izacard et al.):

* The **key encoder** is a copy of the query encoder that gets no gradient; after each optimizer
  step it moves towards the query encoder: `theta_k <- m * theta_k + (1 - m) * theta_q` (paper:
  m = 0.9995, i.e. an exponential moving average over ~2,000 steps).
* The **queue** holds the most recent `queue_size` keys (paper: 131,072) from all processes, oldest
  overwritten first. Query i is scored against its own key k_i (the positive) and every queued key
  (the negatives): `logits = [q_i . k_i, q_i . queue] / temperature`. Other keys of the current
  batch are *not* negatives (they enter the queue after the loss).
* The key encoder runs in eval mode (no dropout) unless `key_encoder_dropout=True`. The paper's
  code meant to make this an option, but the option was never read, so its key encoder always ran
  with dropout; our default is the intended one.

Decisions:

* The queue starts **empty** and only filled slots are negatives (`queue_filled` counts them), so
  the first steps see fewer negatives instead of meaningless random vectors. (On the very first
  step the loss is 0: the positive is the only candidate.) `queue_init="random"` (config
  `loss.queue_init`) gives the reference's start instead: random unit vectors, all slots counted
  as filled, drawn from a generator seeded by `seed` alone, so every process starts from the same
  queue.
* Keys enter the queue once per optimizer step, in `momentum_update` (or `flush`, `enqueue`,
  `state_dict`), not in `forward`: the backward pass still reads the queue the loss saw, and
  writing into it in place would corrupt it (autograd refuses; cloning a 131,072-key queue every
  step to avoid this would cost memory and time). With gradient accumulation every micro-batch of
  a step therefore sees the same queue, as one big batch would, and all their keys enter it at the
  end of the step (micro-batch by micro-batch, each in rank order).
* Keys are enqueued after being gathered from every process in rank order, so every process holds
  the identical queue, and it is the queue one process with the global batch would hold.
  Wrap-around is handled for any queue size and batch size.
* The queue position and fill count are plain integers saved as the module's extra state: the
  state dict (key encoder weights, queue, position, fill count) resumes a run exactly, and reading
  them never waits on the GPU.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F

from contriever.training.distributed import all_gather_no_grad
from contriever.training.losses.infonce import fp32_scores, info_nce_from_scores
from contriever.training.losses.objective import Objective, key_inputs, query_inputs, with_spread


def starting_queue(
    queue_init: str, queue_size: int, dim: int, seed: int, device: torch.device
) -> tuple[torch.Tensor, int]:
    """The queue a run starts from and how many of its slots count as filled: zeros, none filled
    ("empty"), or random unit vectors, all filled ("random", the reference's start), drawn from a
    generator seeded by `seed` alone (not the per-rank global seed), so every process starts alike."""
    if queue_init == "random":
        generator = torch.Generator().manual_seed(seed)
        return F.normalize(torch.randn(queue_size, dim, generator=generator), dim=1).to(device), queue_size
    return torch.zeros(queue_size, dim, device=device), 0


class MoCo(Objective):
    """The key encoder, the queue and the loss: `forward(q, k) -> (loss, stats)`; `k` is queued after.

    Typical step::

        q = encoder(**q_inputs)
        k = moco.encode_keys(**k_inputs)      # key encoder, no grad
        loss, stats = moco(q, k)              # scores against k and the queue; k set aside
        loss.backward(); optimizer.step()
        moco.momentum_update(encoder)         # key encoder follows; k enters the queue

    or, through the trainer's interface, `loss(encoder, batch)` and `after_step(encoder)`.
    """

    def __init__(
        self,
        encoder: torch.nn.Module,
        queue_size: int = 131072,
        momentum: float = 0.9995,
        temperature: float = 0.05,
        label_smoothing: float = 0.0,
        key_encoder_dropout: bool = False,
        queue_init: str = "empty",
        seed: int = 0,
    ):
        super().__init__()
        if queue_size < 1:
            raise ValueError(f"queue_size must be at least 1, got {queue_size}")
        if not 0.0 <= momentum <= 1.0:
            raise ValueError(f"momentum must be in [0, 1], got {momentum}")
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        if queue_init not in ("empty", "random"):
            raise ValueError(f"unknown queue_init {queue_init!r}; choose 'empty' or 'random'")
        self.queue_size = queue_size
        self.momentum = momentum
        self.temperature = temperature
        self.label_smoothing = label_smoothing
        self.key_encoder_dropout = key_encoder_dropout

        self.key_encoder = copy.deepcopy(encoder)
        self.key_encoder.requires_grad_(False)
        self.key_encoder.train(self.training and key_encoder_dropout)

        device = next(encoder.parameters()).device
        queue, self.queue_filled = starting_queue(queue_init, queue_size, int(encoder.dim), seed, device)
        self.register_buffer("queue", queue)
        self.queue_ptr = 0
        self._pending: list[torch.Tensor] = []  # keys of this step's forwards, not yet written

    # ----- state -------------------------------------------------------------------------------------
    def get_extra_state(self) -> dict:
        return {"queue_ptr": self.queue_ptr, "queue_filled": self.queue_filled}

    def set_extra_state(self, state: dict) -> None:
        self.queue_ptr = int(state["queue_ptr"])
        self.queue_filled = int(state["queue_filled"])
        self._pending = []

    def train(self, mode: bool = True) -> MoCo:
        """The key encoder follows `mode` only when `key_encoder_dropout`; otherwise it stays in eval."""
        super().train(mode)
        self.key_encoder.train(mode and self.key_encoder_dropout)
        return self

    # ----- keys ----------------------------------------------------------------------------------------
    @torch.no_grad()
    def encode_keys(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Keys `[B, D]` from the key encoder, without gradient."""
        return self.key_encoder(input_ids, attention_mask)

    @torch.no_grad()
    def momentum_update(self, query_encoder: torch.nn.Module) -> None:
        """`theta_k <- m * theta_k + (1 - m) * theta_q` for every parameter (after the optimizer step)."""
        self.flush()
        key_params = list(self.key_encoder.parameters())
        query_params = [p.detach() for p in query_encoder.parameters()]
        if len(key_params) != len(query_params):
            raise ValueError("the query encoder's parameters do not match the key encoder's")
        # lerp(k, q, w) = k + w * (q - k) = (1 - w) * k + w * q, with w = 1 - m.
        torch._foreach_lerp_(key_params, query_params, 1.0 - self.momentum)

    # ----- queue ---------------------------------------------------------------------------------------
    @torch.no_grad()
    def enqueue(self, keys: torch.Tensor) -> None:
        """Append every process's `keys` (gathered in rank order) now, overwriting the oldest entries."""
        self.flush()
        self._write(all_gather_no_grad(keys.detach()))

    @torch.no_grad()
    def flush(self) -> None:
        """Write the keys set aside by `forward` into the queue (after the backward passes that used it)."""
        pending, self._pending = self._pending, []
        for keys in pending:
            self._write(keys)

    def _write(self, keys: torch.Tensor) -> None:
        keys = keys.to(self.queue.dtype)
        n = keys.shape[0]
        self.queue_filled = min(self.queue_filled + n, self.queue_size)
        if n >= self.queue_size:  # only the newest queue_size keys survive
            start = (self.queue_ptr + n - self.queue_size) % self.queue_size
            keys, n = keys[n - self.queue_size :], self.queue_size
        else:
            start = self.queue_ptr
        first = min(n, self.queue_size - start)  # up to the end of the buffer, then wrap to 0
        self.queue[start : start + first] = keys[:first]
        if first < n:
            self.queue[: n - first] = keys[first:]
        self.queue_ptr = (start + n) % self.queue_size

    def negatives(self) -> torch.Tensor:
        """The queued keys that count as negatives: every filled slot (a prefix until the queue wraps)."""
        return self.queue[: self.queue_filled]

    def state_dict(self, *args, **kwargs):
        self.flush()  # the saved queue includes the last step's keys
        return super().state_dict(*args, **kwargs)

    # ----- the trainer's interface ---------------------------------------------------------------------
    def loss(self, encoder: torch.nn.Module, batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
        """Queries through `encoder`, keys through the key encoder, scored against keys and queue."""
        q = encoder(**query_inputs(batch))
        k = self.encode_keys(**key_inputs(batch))
        loss, stats = self(q, k)
        return loss, with_spread(stats, q, k)

    def after_step(self, encoder: torch.nn.Module) -> None:
        self.momentum_update(encoder)

    # ----- loss ----------------------------------------------------------------------------------------
    def forward(
        self, q: torch.Tensor, k: torch.Tensor, update_queue: bool = True
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """Loss of queries `[B, D]` against their keys `[B, D]` (positives) and the queue (negatives).

        `k` comes from `encode_keys` and carries no gradient. With `update_queue` (the default) the
        keys of every process are gathered now and enter the queue at the next `momentum_update`
        (or `flush`, `enqueue`, `state_dict`): the loss's backward still needs the queue as it was,
        so it must not be overwritten before then (autograd would refuse to differentiate).
        """
        if q.shape != k.shape:
            raise ValueError(f"queries {tuple(q.shape)} and keys {tuple(k.shape)} must have the same shape")
        k = k.detach()
        positive = (q.float() * k.float()).sum(dim=1, keepdim=True)  # [B, 1]
        negative = fp32_scores(q, self.negatives())  # [B, filled]
        scores = torch.cat([positive, negative], dim=1)
        target = torch.zeros(q.shape[0], dtype=torch.long, device=q.device)
        loss, stats = info_nce_from_scores(scores, target, self.temperature, self.label_smoothing)
        stats["queue_filled"] = self.queue_filled / self.queue_size
        if update_queue:
            self._pending.append(all_gather_no_grad(k))
        return loss, stats

    def extra_repr(self) -> str:
        return (
            f"queue_size={self.queue_size}, momentum={self.momentum}, temperature={self.temperature}, "
            f"key_encoder_dropout={self.key_encoder_dropout}"
        )
