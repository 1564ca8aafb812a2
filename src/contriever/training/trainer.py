"""The one trainer, for unsupervised pretraining and for supervised / few-shot fine-tuning.

Read top to bottom: set up processes, build the encoder, the objective (MoCo or in-batch), the
optimizer (AdamW, SAM or ASAM) and the batch source; resume from `checkpoint.pt` when the output
folder has one; then loop: forward, backward, all-reduce, clip, step, log, evaluate, checkpoint.

Under torchrun each process reads its own part of the data, computes its share of the global batch,
and gradients are averaged across processes by an explicit all-reduce (no DDP wrapper: gradient
caching and ASAM's two passes need control over when gradients are synchronised).
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from contriever.errors import ConfigError
from contriever.io import atomic_write, write_json
from contriever.model.encoder import Encoder, autocast_context
from contriever.training.checkpoint import (
    CHECKPOINT_NAME,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from contriever.training.config import Config
from contriever.training.distributed import (
    DistInfo,
    all_reduce_gradients,
    all_reduce_mean,
    broadcast_object,
    gather_objects,
    setup_distributed,
)
from contriever.training.losses.gradcache import gradcache_backward
from contriever.training.losses.inbatch import InBatchLoss
from contriever.training.losses.moco import MoCo
from contriever.training.optim import build_optimizer, build_scheduler

METRICS_NAME = "metrics.jsonl"


# ----- building blocks -------------------------------------------------------------------------------
def build_encoder(config: Config) -> Encoder:
    model = config.model
    if model.init == "scratch":
        encoder = Encoder.from_scratch(
            model.path,
            pooling=model.pooling,
            normalize=model.normalize,
            max_length=model.max_length,
            seed=config.train.seed,
            hidden_size=model.hidden_size,
            num_hidden_layers=model.num_hidden_layers,
            num_attention_heads=model.num_attention_heads,
            intermediate_size=model.intermediate_size,
            max_position_embeddings=model.max_position_embeddings,
        )
    else:
        encoder = Encoder.load(
            model.path, pooling=model.pooling, normalize=model.normalize, max_length=model.max_length
        )
    if model.dropout is not None or model.attention_dropout is not None:
        set_dropout(encoder, model.dropout, model.attention_dropout)
    return encoder


def set_dropout(encoder: Encoder, p: float | None, attention: float | None = None) -> None:
    """Set dropout to probability `p` everywhere and to `attention` (default `p`) on attention weights.

    The saved config carries both, so a reloaded model trains the same way. None leaves a kind as it is.
    """
    attention = p if attention is None else attention
    for name, module in encoder.named_modules():
        if isinstance(module, torch.nn.Dropout):
            # BERT-style models name the attention-probability dropout `attention.self.dropout`.
            value = attention if ".attention.self" in f".{name}" else p
            if value is not None:
                module.p = value
    for name, value in (("hidden_dropout_prob", p), ("attention_probs_dropout_prob", attention)):
        if value is not None and hasattr(encoder.model.config, name):
            setattr(encoder.model.config, name, value)


def build_batches(config: Config, encoder: Encoder, dist: DistInfo, local_batch: int):
    """The batch source: `next_batch()` gives token tensors; `state_dict()` makes resume exact."""
    if config.task == "pretrain":
        from contriever.training.batches import PretrainBatches

        return PretrainBatches(config, encoder.tokenizer, local_batch, dist.rank, dist.world_size)
    from contriever.training.batches import FinetuneBatches

    return FinetuneBatches(config, encoder, local_batch, dist.rank, dist.world_size)


def embedding_std(vectors: torch.Tensor) -> float:
    """Mean per-dimension standard deviation over the batch: near 0 means the embeddings collapsed."""
    return float(vectors.detach().float().std(dim=0).mean()) if len(vectors) > 1 else 0.0


class MetricsLog:
    """`metrics.jsonl`, one JSON object a line, flushed as it goes; trimmed to the checkpoint on resume."""

    def __init__(self, path: Path, resume_step: int | None, enabled: bool):
        self.path = path
        self.enabled = enabled
        if enabled and resume_step is not None and path.exists():
            kept = [
                line
                for line in path.read_text().splitlines()
                if line and json.loads(line)["step"] <= resume_step
            ]
            with atomic_write(path) as handle:
                handle.write("".join(line + "\n" for line in kept))
        elif enabled and resume_step is None and path.exists():
            path.unlink()

    def write(self, record: dict) -> None:
        if self.enabled:
            with open(self.path, "a") as handle:
                handle.write(json.dumps(record) + "\n")


# ----- the training loop ------------------------------------------------------------------------------
def train(config: Config, output: str | Path) -> Path:
    """Train per `config`, writing into `output`; returns the folder of the final model.

    `output/` receives `config.json`, `metrics.jsonl`, `checkpoint.pt` (exact resume), `model/` (the
    trained encoder, loadable by `contriever evaluate --model`), `best/` when fine-tuning evaluates
    on its dev set (pretraining's evaluation only monitors: it may be a test split), and
    `training.png`.
    """
    output = Path(output)
    dist = setup_distributed()
    if dist.is_main:
        output.mkdir(parents=True, exist_ok=True)
        write_json(output / "config.json", config.to_dict())
    torch.manual_seed(config.train.seed + dist.rank)

    train_cfg, loss_cfg, optim_cfg = config.train, config.loss, config.optim
    if train_cfg.batch_size % (dist.world_size * train_cfg.grad_accum):
        raise ConfigError(
            f"train.batch_size {train_cfg.batch_size} must split evenly over {dist.world_size} processes "
            f"x {train_cfg.grad_accum} accumulation steps"
        )
    local_batch = train_cfg.batch_size // dist.world_size
    micro_batch = local_batch // train_cfg.grad_accum

    encoder = build_encoder(config).to(dist.device)
    encoder.train()
    if loss_cfg.kind == "moco":
        objective = MoCo(
            encoder,
            queue_size=loss_cfg.queue_size,
            momentum=loss_cfg.momentum,
            temperature=loss_cfg.temperature,
            label_smoothing=loss_cfg.label_smoothing,
            key_encoder_dropout=loss_cfg.key_encoder_dropout,
        ).to(dist.device)
    else:
        objective = InBatchLoss(temperature=loss_cfg.temperature, label_smoothing=loss_cfg.label_smoothing)

    optimizer = build_optimizer(
        encoder,
        name="adamw",
        lr=optim_cfg.lr,
        betas=optim_cfg.betas,
        eps=optim_cfg.eps,
        weight_decay=optim_cfg.weight_decay,
    )
    sharpness = None
    if optim_cfg.name in ("sam", "asam"):
        from contriever.training.asam import SAM

        sharpness = SAM(
            encoder.parameters(),
            optimizer,
            rho=optim_cfg.rho,
            eta=optim_cfg.eta,
            adaptive=optim_cfg.name == "asam",
        )
    scheduler = build_scheduler(
        optimizer,
        warmup_steps=min(optim_cfg.warmup_steps, train_cfg.steps),
        total_steps=train_cfg.steps,
        kind=optim_cfg.scheduler,
        final_lr_ratio=optim_cfg.final_lr_ratio,
    )
    batches = build_batches(config, encoder, dist, local_batch)
    evaluator = batches.evaluator() if train_cfg.eval_every else None

    # ----- resume --------------------------------------------------------------------------------------
    step, best, evals_since_best = 0, -math.inf, 0
    keep_best = config.task == "finetune"  # its evaluation is on dev; pretraining's is for watching only
    checkpoint = load_checkpoint(output / CHECKPOINT_NAME, map_location=dist.device)
    if checkpoint is not None:
        encoder.load_state_dict(checkpoint["encoder"])
        if loss_cfg.kind == "moco":
            objective.load_state_dict(checkpoint["objective"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        scheduler.load_state_dict(checkpoint["scheduler"])
        batches.load_state_dict(checkpoint["batches"][dist.rank])
        set_rng_state(checkpoint["rng"][dist.rank])
        step, best, evals_since_best = checkpoint["step"], checkpoint["best"], checkpoint["evals_since_best"]
    log = MetricsLog(output / METRICS_NAME, step if checkpoint is not None else None, dist.is_main)

    def checkpoint_now() -> None:
        state = {
            "step": step,
            "best": best,
            "evals_since_best": evals_since_best,
            "encoder": encoder.state_dict(),
            "objective": objective.state_dict() if loss_cfg.kind == "moco" else None,
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "batches": gather_objects(batches.state_dict()),
            "rng": gather_objects(rng_state()),
            "config": config.to_dict(),
        }
        if dist.is_main:
            save_checkpoint(output / CHECKPOINT_NAME, state)

    # ----- one update's forward and backward -------------------------------------------------------------
    def forward_backward(batch: dict) -> dict:
        """Loss and its gradient for this process's part of the batch; returns detached statistics."""
        totals: dict[str, float] = {}
        for micro in split_batch(batch, micro_batch):
            micro = {name: tensor.to(dist.device, non_blocking=True) for name, tensor in micro.items()}
            q_inputs = {"input_ids": micro["q_ids"], "attention_mask": micro["q_mask"]}
            k_inputs = {"input_ids": micro["k_ids"], "attention_mask": micro["k_mask"]}
            autocast = autocast_context(dist.device, train_cfg.precision)
            if loss_cfg.gradcache_chunk and loss_cfg.kind == "inbatch":
                q, k = None, None

                def scaled_loss(q_vectors, k_vectors):
                    loss, stats = objective(q_vectors, k_vectors)
                    stats["q_std"] = embedding_std(q_vectors)
                    stats["k_std"] = embedding_std(k_vectors)
                    return loss / train_cfg.grad_accum, stats

                with autocast:  # gradcache runs its backward passes outside autocast itself
                    loss, stats = gradcache_backward(
                        encoder, q_inputs, k_inputs, scaled_loss, loss_cfg.gradcache_chunk
                    )
                loss = loss * train_cfg.grad_accum
            else:
                with autocast:
                    q = encoder(**q_inputs)
                    k = objective.encode_keys(**k_inputs) if loss_cfg.kind == "moco" else encoder(**k_inputs)
                    loss, stats = objective(q, k)
                (loss / train_cfg.grad_accum).backward()  # outside autocast, as torch recommends
            if q is not None:
                stats["q_std"] = embedding_std(q)
                stats["k_std"] = embedding_std(k)
            stats["loss"] = float(loss.detach())
            for name, value in stats.items():
                totals[name] = totals.get(name, 0.0) + float(value) / train_cfg.grad_accum
        return totals

    # ----- the loop ------------------------------------------------------------------------------------
    progress = tqdm(
        total=train_cfg.steps,
        initial=step,
        desc=config.task,
        unit="step",
        disable=not dist.is_main,
        dynamic_ncols=True,
    )
    started = time.time()
    window_start, window_pairs = time.time(), 0
    stop_reason = "finished"
    while step < train_cfg.steps:
        batch = batches.next_batch()
        optimizer.zero_grad(set_to_none=True)
        stats = forward_backward(batch)
        all_reduce_gradients(encoder, dist)
        if sharpness is not None:
            sharpness.first_step()  # move to the sharpest point of the neighbourhood
            optimizer.zero_grad(set_to_none=True)
            forward_backward(batch)  # the same batch (and dropout masks drawn afresh), gradient there
            all_reduce_gradients(encoder, dist)
        if optim_cfg.clip_norm > 0:
            stats["grad_norm"] = float(
                torch.nn.utils.clip_grad_norm_(encoder.parameters(), optim_cfg.clip_norm)
            )
        if sharpness is not None:
            sharpness.second_step()  # back to the weights, then the base optimizer's step
        else:
            optimizer.step()
        scheduler.step()
        if loss_cfg.kind == "moco":
            objective.momentum_update(encoder)
        step += 1
        window_pairs += train_cfg.batch_size
        progress.update(1)

        if step % train_cfg.log_every == 0 or step == train_cfg.steps:
            stats = {name: all_reduce_mean(value, dist) for name, value in stats.items()}
            elapsed = time.time() - window_start
            record = {
                "step": step,
                **{name: round(value, 6) for name, value in stats.items()},
                "lr": scheduler.get_last_lr()[0],
                "pairs_per_s": round(window_pairs / max(elapsed, 1e-9), 2),
                "elapsed_s": round(time.time() - started, 1),
            }
            log.write(record)
            progress.set_postfix(loss=f"{stats['loss']:.3f}", acc=f"{stats.get('accuracy', 0):.2f}")
            window_start, window_pairs = time.time(), 0

        out_of_time = bool(train_cfg.max_minutes) and (time.time() - started) / 60 >= train_cfg.max_minutes
        if train_cfg.max_minutes:
            out_of_time = broadcast_object(out_of_time)  # rank 0's clock decides, so all stop together
        last = out_of_time or step == train_cfg.steps  # evaluate the model that will be saved
        if evaluator is not None and (step % train_cfg.eval_every == 0 or last):
            metrics = evaluator(encoder) if dist.is_main else {}
            metrics = broadcast_object(metrics)
            encoder.train()
            score = metrics[config.eval.metric]
            log.write({"step": step, **{f"eval/{name}": value for name, value in metrics.items()}})
            progress.write(f"step {step}: " + "  ".join(f"{n} {100 * v:.2f}" for n, v in metrics.items()))
            if score > best:
                best, evals_since_best = score, 0
                if dist.is_main and keep_best:
                    encoder.save(output / "best")
            else:
                evals_since_best += 1
            if train_cfg.early_stopping_patience and evals_since_best >= train_cfg.early_stopping_patience:
                stop_reason = f"early stopping: no gain in {evals_since_best} evaluations"
        if out_of_time:
            stop_reason = f"time limit of {train_cfg.max_minutes} minutes"
        if step % train_cfg.save_every == 0 or step == train_cfg.steps or stop_reason != "finished":
            checkpoint_now()
        if stop_reason != "finished":
            break
    progress.close()

    if dist.is_main:
        encoder.save(output / "model")
        write_json(
            output / "summary.json",
            {
                "steps": step,
                "stop": stop_reason,
                "best": best if math.isfinite(best) else None,
                "minutes": (time.time() - started) / 60,
            },
        )
        try:
            from contriever.training.plots import plot_training

            plot_training(output / METRICS_NAME, output / "training.png")
        except ImportError:
            pass  # matplotlib is an optional extra
    return output / ("best" if (output / "best").exists() else "model")


# ----- helpers ------------------------------------------------------------------------------------------
def split_batch(batch: dict, size: int) -> list[dict]:
    """Cut a batch of query/key tensors into micro-batches of `size` queries (keys follow their queries)."""
    n = len(batch["q_ids"])
    if size >= n:
        return [batch]
    keys_per_query = len(batch["k_ids"]) // n
    parts = []
    for start in range(0, n, size):
        stop = min(start + size, n)
        part = {"q_ids": batch["q_ids"][start:stop], "q_mask": batch["q_mask"][start:stop]}
        # Keys are laid out as [positives (n), extra negatives (n * (keys_per_query - 1))].
        rows = [torch.arange(start, stop)]
        for extra in range(1, keys_per_query):
            rows.append(torch.arange(extra * n + start, extra * n + stop))
        rows = torch.cat(rows)
        part["k_ids"], part["k_mask"] = batch["k_ids"][rows], batch["k_mask"][rows]
        parts.append(part)
    return parts
