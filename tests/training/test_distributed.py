"""Two gloo processes with B examples each must train exactly like one process with 2B.

One module-scoped fixture launches the two processes once (torch.multiprocessing, localhost, a free
port, torchrun's environment variables); each process runs every scenario and saves what it saw;
the tests compare that with one process doing the same work on the whole batch.
"""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.multiprocessing as mp

from contriever.training.distributed import (
    DistInfo,
    all_gather_no_grad,
    all_gather_with_grad,
    all_reduce_gradients,
    all_reduce_mean,
    broadcast_object,
    gather_objects,
    leave_process_group,
    setup_distributed,
)
from contriever.training.losses.gradcache import gradcache_loss
from contriever.training.losses.inbatch import InBatchLoss
from contriever.training.losses.moco import MoCo


def gradcache_backward(model, q, k, loss_fn, chunk_size):
    """The loss with gradient caching, then its backward pass (which runs the chunked re-encoding)."""
    loss, stats = gradcache_loss(model, q, k, loss_fn, chunk_size)
    loss.backward()
    return loss.detach(), stats


WORLD = 2
B = 3  # examples per process
DIM = 4


class ToyEncoder(torch.nn.Module):
    """Embedding, linear, masked mean: the `Encoder` call signature in a few parameters."""

    def __init__(self, vocab: int = 40, dim: int = DIM):
        super().__init__()
        self.dim = dim
        self.embed = torch.nn.Embedding(vocab, dim)
        self.proj = torch.nn.Linear(dim, dim)

    def forward(self, input_ids, attention_mask):
        hidden = torch.tanh(self.proj(self.embed(input_ids)))
        mask = attention_mask.unsqueeze(-1).float()
        return (hidden * mask).sum(1) / mask.sum(1)


def make_model() -> ToyEncoder:
    torch.manual_seed(0)
    return ToyEncoder()


def global_batch(seed: int, n: int, length: int = 5) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, 40, (n, length), generator=g)
    mask = torch.ones(n, length, dtype=torch.long)
    mask[::2, -2:] = 0
    return {"input_ids": ids, "attention_mask": mask}


def rows(inputs: dict, index: torch.Tensor) -> dict:
    return {name: t[index] for name, t in inputs.items()}


def local_keys_index(rank: int, n_local: int, extra: bool) -> torch.Tensor:
    """This process's keys out of the global layout [positives (2B), negatives (2B)]."""
    own = torch.arange(rank * n_local, (rank + 1) * n_local)
    return torch.cat([own, own + WORLD * n_local]) if extra else own


def grads(model) -> dict[str, torch.Tensor]:
    return {name: p.grad.clone() for name, p in model.named_parameters()}


def moco_key_batch(step: int, rank: int) -> torch.Tensor:
    """Keys that say who made them: value = 100 * step + 10 * rank + row."""
    base = 100 * step + 10 * rank
    return (base + torch.arange(B, dtype=torch.float32))[:, None].repeat(1, DIM)


def _worker(rank: int, port: int, out_dir: str) -> None:
    os.environ.update(
        RANK=str(rank),
        WORLD_SIZE=str(WORLD),
        LOCAL_RANK=str(rank),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )
    torch.set_num_threads(1)
    info = setup_distributed()
    out: dict = {"info": info}
    try:
        q_all, k_all = global_batch(1, WORLD * B), global_batch(2, 2 * WORLD * B)
        q_local = rows(q_all, torch.arange(rank * B, (rank + 1) * B))
        loss_fn = InBatchLoss(temperature=0.1)

        # in-batch, with and without extra negatives
        for extra in (False, True):
            model = make_model()
            k_local = rows(k_all, local_keys_index(rank, B, extra))
            loss, stats = loss_fn(model(**q_local), model(**k_local))
            loss.backward()
            all_reduce_gradients(model, info)
            out[f"inbatch_{extra}"] = {
                "loss": all_reduce_mean(loss.item(), info),
                "accuracy": all_reduce_mean(stats["accuracy"], info),
                "grads": grads(model),
            }

        # gradient caching under two processes
        model = make_model()
        k_local = rows(k_all, local_keys_index(rank, B, True))
        loss, _ = gradcache_backward(model, q_local, k_local, loss_fn, chunk_size=2)
        all_reduce_gradients(model, info)
        out["gradcache"] = {"loss": all_reduce_mean(loss), "grads": grads(model)}

        # MoCo: the queue gathers every process's keys in rank order, with wrap-around
        model = make_model()
        moco = MoCo(model, queue_size=10, temperature=0.1)
        queues = []
        for step in range(4):
            moco(model(**q_local), moco_key_batch(step, rank))
            moco.flush()
            queues.append((moco.queue.clone(), moco.queue_ptr, moco.queue_filled))
        out["moco_queues"] = queues
        # and its gradient, averaged, equals one process's with the whole batch
        k = moco.encode_keys(**q_local)
        loss, _ = moco(model(**q_local), k)
        loss.backward()
        all_reduce_gradients(model, info)
        out["moco"] = {"loss": all_reduce_mean(loss.item()), "grads": grads(model)}

        # the plain collectives
        t = torch.full((2, 3), float(rank), requires_grad=True)
        gathered = all_gather_with_grad(t)
        (gathered * torch.arange(1.0, 5.0)[:, None]).sum().backward()
        out["gather_grad"] = t.grad
        out["gather_no_grad"] = all_gather_no_grad(torch.tensor([rank]))
        out["mean_tensor"] = all_reduce_mean(torch.tensor([float(rank), 2.0 * rank]))
        out["broadcast"] = broadcast_object({"from": rank})
        out["objects"] = gather_objects(f"rank {rank}")
        out["again"] = setup_distributed()
    finally:
        torch.save(out, os.path.join(out_dir, f"rank{rank}.pt"))
        leave_process_group()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    out_dir = tmp_path_factory.mktemp("dist")
    mp.spawn(_worker, args=(free_port(), str(out_dir)), nprocs=WORLD, join=True)
    return [torch.load(out_dir / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]


def single_process_inbatch(extra: bool):
    model = make_model()
    q_all, k_all = global_batch(1, WORLD * B), global_batch(2, 2 * WORLD * B)
    if not extra:
        k_all = rows(k_all, torch.arange(WORLD * B))
    loss, stats = InBatchLoss(temperature=0.1)(model(**q_all), model(**k_all))
    loss.backward()
    return loss.item(), stats, grads(model)


def assert_same_grads(got: dict, expected: dict) -> None:
    assert got.keys() == expected.keys()
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=1e-5, atol=1e-6, msg=name)


def test_setup_reads_torchrun_environment(results):
    for rank, result in enumerate(results):
        assert result["info"] == DistInfo(rank, WORLD, rank, torch.device("cpu"), rank == 0)
        assert result["again"] == result["info"]  # a second call reports the existing group


def test_setup_without_torchrun_is_single_process(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    info = setup_distributed()
    assert (info.rank, info.world_size, info.is_main, info.is_distributed) == (0, 1, True, False)
    x = torch.ones(2, requires_grad=True)
    assert all_gather_with_grad(x) is x
    assert all_reduce_mean(3.5) == 3.5


@pytest.mark.parametrize("extra", [False, True])
def test_inbatch_two_processes_equal_one_big_batch(results, extra):
    loss, stats, expected = single_process_inbatch(extra)
    for result in results:
        got = result[f"inbatch_{extra}"]
        assert got["loss"] == pytest.approx(loss, rel=1e-6)
        assert got["accuracy"] == pytest.approx(stats["accuracy"])
        assert_same_grads(got["grads"], expected)


def test_gradcache_two_processes_equal_one_big_batch(results):
    loss, _, expected = single_process_inbatch(extra=True)
    for result in results:
        assert result["gradcache"]["loss"] == pytest.approx(loss, rel=1e-6)
        assert_same_grads(result["gradcache"]["grads"], expected)


def test_moco_queue_holds_every_process_keys_in_global_order(results):
    reference = MoCo(make_model(), queue_size=10)
    for step in range(4):
        reference.enqueue(torch.cat([moco_key_batch(step, rank) for rank in range(WORLD)]))
        expected = (reference.queue, reference.queue_ptr, reference.queue_filled)
        for result in results:
            queue, ptr, filled = result["moco_queues"][step]
            torch.testing.assert_close(queue, expected[0], rtol=0, atol=0)
            assert (ptr, filled) == expected[1:]
    # 6 keys a step into 10 slots: step 2 filled slots 2-7; step 3 wrote 300, 301 (rank 0) into slots
    # 8-9 and wrapped 302 (rank 0), 310-312 (rank 1) to slots 0-3
    assert reference.queue[:, 0].tolist() == [302, 310, 311, 312, 202, 210, 211, 212, 300, 301]


def test_moco_two_processes_equal_one_big_batch(results):
    model = make_model()
    moco = MoCo(model, queue_size=10, temperature=0.1)
    for step in range(4):
        moco.enqueue(torch.cat([moco_key_batch(step, rank) for rank in range(WORLD)]))
    q_all = global_batch(1, WORLD * B)
    loss, _ = moco(model(**q_all), moco.encode_keys(**q_all))
    loss.backward()
    for result in results:
        assert result["moco"]["loss"] == pytest.approx(loss.item(), rel=1e-6)
        assert_same_grads(result["moco"]["grads"], grads(model))


def test_collectives(results):
    for rank, result in enumerate(results):
        # d/dt of sum(row_weight * gathered): rank 0 owns rows 0-1 (weights 1, 2), rank 1 rows 2-3 (3, 4);
        # both processes' losses count, so the gradient is doubled
        weights = torch.tensor([1.0, 2.0]) + 2 * rank
        torch.testing.assert_close(result["gather_grad"], WORLD * weights[:, None].expand(2, 3))
        assert result["gather_no_grad"].tolist() == [0, 1]
        torch.testing.assert_close(result["mean_tensor"], torch.tensor([0.5, 1.0]))
        assert result["broadcast"] == {"from": 0}
        assert result["objects"] == ["rank 0", "rank 1"]
