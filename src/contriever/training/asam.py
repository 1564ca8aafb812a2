"""SAM and ASAM: step from the worst point of a small neighbourhood, towards flat minima.

Sharpness-aware minimization (SAM, Foret et al. 2021) minimizes `max_{||e|| <= rho} L(w + e)`. To
first order the worst perturbation is `e = rho * g / ||g||` (g = gradient at w), so one update is:

1. `first_step()`: with g at w, move to `w + e`;
2. compute the gradient again at `w + e` (a second forward/backward on the same batch);
3. `second_step()`: go back to w and let the base optimizer (AdamW, SGD, ...) step with that gradient.

Adaptive SAM (ASAM, Kwon et al. 2021, the paper's choice for fine-tuning; absent from its released
code) makes the neighbourhood scale-invariant: it is measured relative to the size of each weight,
through the elementwise operator `T_w = |w| + eta`. The worst perturbation becomes

    e = rho * T_w^2 g / ||T_w g||          (SAM: T_w = 1, so e = rho * g / ||g||)

so large weights are perturbed more than small ones and rescaling a layer does not change the
sharpness it sees. `eta` keeps zero weights movable. Typical rho: 0.05 for SAM, 0.5 to 2 for ASAM.
Here T_w applies to every parameter, biases and norms included (Kwon et al.'s elementwise
definition; their code leaves biases unscaled).

Several processes: `first_step` must see the gradient of the *global* batch, so all-reduce the
gradients (`distributed.all_reduce_gradients`) before it, and again before `second_step`; every
process then computes the same perturbation. Gradient clipping, if any, goes between the second
all-reduce and `second_step` (it clips the gradient the base optimizer uses).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch


class SAM:
    """Wraps an already built `base_optimizer` (its parameter groups, weight decay and schedule stay).

    `params`: the parameters to perturb (usually all of the model's). `rho`: neighbourhood radius.
    `adaptive=True` gives ASAM with `T_w = |w| + eta`.
    """

    def __init__(
        self,
        params: Iterable[torch.nn.Parameter],
        base_optimizer: torch.optim.Optimizer,
        rho: float = 0.05,
        eta: float = 0.01,
        adaptive: bool = False,
    ):
        if rho < 0:
            raise ValueError(f"rho must be non-negative, got {rho}")
        if eta < 0:
            raise ValueError(f"eta must be non-negative, got {eta}")
        self.params = [p for p in params if p.requires_grad]
        self.base_optimizer = base_optimizer
        self.rho = rho
        self.eta = eta
        self.adaptive = adaptive
        self._saved: list[tuple[torch.Tensor, torch.Tensor]] | None = None  # (param, its value at w)

    @property
    def param_groups(self):
        return self.base_optimizer.param_groups

    @torch.no_grad()
    def first_step(self, zero_grad: bool = False) -> float:
        """Move every parameter with a gradient to `w + e`; returns the norm `||T_w g||`."""
        if self._saved is not None:
            raise RuntimeError("first_step called twice without second_step")
        params = [p for p in self.params if p.grad is not None]
        self._saved = [(p, p.detach().clone()) for p in params]
        if not params:
            return 0.0
        grads = [p.grad.detach().float() for p in params]
        if self.adaptive:
            scales = [p.detach().float().abs().add_(self.eta) for p in params]  # T_w, elementwise
            scaled = torch._foreach_mul(grads, scales)  # T_w g
        else:
            scales, scaled = None, grads
        norm = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(scaled)))
        factor = self.rho / (norm + 1e-12)
        # e = rho * T_w (T_w g) / ||T_w g||
        perturbation = torch._foreach_mul(scaled, scales) if self.adaptive else scaled
        perturbation = torch._foreach_mul(perturbation, factor)
        for p, e in zip(params, perturbation):
            p.add_(e.to(p.dtype))
        if zero_grad:
            self.zero_grad()
        return float(norm)

    @torch.no_grad()
    def second_step(self, zero_grad: bool = False) -> None:
        """Restore the weights at w exactly, then step the base optimizer with the gradient at w + e."""
        if self._saved is None:
            raise RuntimeError("second_step called without first_step")
        for p, value in self._saved:
            p.copy_(value)
        self._saved = None
        self.base_optimizer.step()
        if zero_grad:
            self.zero_grad()

    def step(self, closure: Callable[[], torch.Tensor]) -> torch.Tensor:
        """One whole update, as `torch.optim.Optimizer.step(closure)`: the trainer's way in.

        `closure` computes fresh gradients (zeroing them first, or the caller zeroes them before
        `step`) and returns the loss or statistics. It is called twice: at w (its result is returned)
        and at w + e; the base optimizer then steps from w with the second gradient.
        """
        with torch.enable_grad():
            loss = closure()
        self.first_step(zero_grad=True)
        with torch.enable_grad():
            closure()
        self.second_step()
        return loss

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.base_optimizer.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict:
        return self.base_optimizer.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.base_optimizer.load_state_dict(state)
