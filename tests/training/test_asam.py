"""SAM and ASAM against updates worked out by hand on a two-parameter quadratic."""

from __future__ import annotations

import math

import pytest
import torch

from contriever.training.asam import SAM

A, B, C = 2.0, 0.5, 1.0  # L(w) = A/2 w1^2 + B/2 w2^2 + C w1, so dL/dw = (A w1 + C, B w2)
W0 = (1.0, -2.0)


def loss_of(w1, w2):
    return 0.5 * A * w1**2 + 0.5 * B * w2**2 + C * w1


def gradient(w1, w2):
    return A * w1 + C, B * w2


def by_hand(rho: float, eta: float, adaptive: bool, lr: float) -> tuple[float, float]:
    """One SAM/ASAM update with plain SGD, in scalar arithmetic."""
    w1, w2 = W0
    g1, g2 = gradient(w1, w2)
    t1, t2 = (abs(w1) + eta, abs(w2) + eta) if adaptive else (1.0, 1.0)
    norm = math.sqrt((t1 * g1) ** 2 + (t2 * g2) ** 2)  # ||T_w g||
    e1, e2 = rho * t1 * t1 * g1 / norm, rho * t2 * t2 * g2 / norm  # rho T_w^2 g / ||T_w g||
    p1, p2 = gradient(w1 + e1, w2 + e2)  # the gradient at the perturbed point
    return w1 - lr * p1, w2 - lr * p2  # applied at the original point


def two_parameters():
    w1, w2 = torch.nn.Parameter(torch.tensor([W0[0]])), torch.nn.Parameter(torch.tensor([W0[1]]))
    return w1, w2


def closure_for(w1, w2):
    def closure():
        loss = loss_of(w1, w2).sum()
        loss.backward()
        return loss

    return closure


@pytest.mark.parametrize(("adaptive", "rho"), [(True, 0.5), (False, 0.05), (True, 2.0)])
def test_two_step_update_matches_hand_computation(adaptive, rho):
    w1, w2 = two_parameters()
    sam = SAM([w1, w2], torch.optim.SGD([w1, w2], lr=0.1), rho=rho, eta=0.01, adaptive=adaptive)
    closure = closure_for(w1, w2)

    closure()
    norm = sam.first_step(zero_grad=True)
    g1, g2 = gradient(*W0)
    t1, t2 = (abs(W0[0]) + 0.01, abs(W0[1]) + 0.01) if adaptive else (1.0, 1.0)
    assert norm == pytest.approx(math.hypot(t1 * g1, t2 * g2), rel=1e-6)
    assert w1.grad is None  # zeroed for the second pass
    closure()
    sam.second_step()

    expected = by_hand(rho, 0.01, adaptive, lr=0.1)
    assert (w1.item(), w2.item()) == pytest.approx(expected, rel=1e-6)


def test_step_with_closure_equals_two_steps():
    w1, w2 = two_parameters()
    sam = SAM([w1, w2], torch.optim.SGD([w1, w2], lr=0.1), rho=0.5, adaptive=True)
    loss = sam.step(closure_for(w1, w2))
    assert loss.item() == pytest.approx(loss_of(*W0))  # the loss at the original point
    assert (w1.item(), w2.item()) == pytest.approx(by_hand(0.5, 0.01, True, lr=0.1), rel=1e-6)


def test_weights_are_restored_exactly():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(5, 4), torch.nn.LayerNorm(4), torch.nn.Linear(4, 1))
    before = [p.detach().clone() for p in model.parameters()]
    sam = SAM(model.parameters(), torch.optim.SGD(model.parameters(), lr=0.0), rho=1.0, adaptive=True)
    x = torch.randn(8, 5)
    model(x).pow(2).mean().backward()
    sam.first_step(zero_grad=True)
    assert any(not torch.equal(a, p) for a, p in zip(before, model.parameters()))  # perturbed
    model(x).pow(2).mean().backward()
    sam.second_step()  # lr 0: back where we started, bit for bit
    assert all(torch.equal(a, p) for a, p in zip(before, model.parameters()))


def test_adaptive_perturbation_follows_weight_size():
    """ASAM perturbs a weight in proportion to T_w^2: rescaling a weight rescales its share."""
    small, large = torch.nn.Parameter(torch.tensor([0.1])), torch.nn.Parameter(torch.tensor([10.0]))
    sam = SAM([small, large], torch.optim.SGD([small, large], lr=0.0), rho=0.1, eta=0.0, adaptive=True)
    small.grad, large.grad = torch.tensor([1.0]), torch.tensor([1.0])
    sam.first_step()
    e_small, e_large = small.item() - 0.1, large.item() - 10.0
    assert e_large / e_small == pytest.approx((10.0 / 0.1) ** 2, rel=1e-4)
    sam.second_step()


def test_misuse_raises():
    w1, w2 = two_parameters()
    sam = SAM([w1, w2], torch.optim.SGD([w1, w2], lr=0.1))
    with pytest.raises(RuntimeError):
        sam.second_step()
    closure_for(w1, w2)()
    sam.first_step()
    with pytest.raises(RuntimeError):
        sam.first_step()
    with pytest.raises(ValueError):
        SAM([w1], torch.optim.SGD([w1], lr=0.1), rho=-1.0)
