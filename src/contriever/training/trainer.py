"""The one trainer, for unsupervised pretraining and for supervised / few-shot fine-tuning.

Read top to bottom: `train` sets up the process, the encoder, the objective (MoCo or in-batch, one
interface: `losses/objective.py`), the optimizer (AdamW, or SAM/ASAM around it) and the batch
source; resumes from `checkpoint.pt` when the output folder has one; then loops: one optimizer step
(`forward_backward` is its closure), the objective's after-step hook, log, evaluate, checkpoint.

Under torchrun each process reads its own part of the data, computes its share of the global batch,
and gradients are averaged across processes by an explicit all-reduce (no DDP wrapper: gradient
caching and ASAM's two passes need control over when gradients are synchronised).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import torch
from tqdm.auto import tqdm

from contriever.errors import ConfigError
from contriever.io import append_line, atomic_write, write_json
from contriever.model.encoder import Encoder, autocast_context
from contriever.training.checkpoint import (
    CHECKPOINT_NAME,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from contriever.training.config import Config, LossConfig, TrainConfig
from contriever.training.distributed import (
    DistInfo,
    all_reduce_gradients,
    all_reduce_mean,
    broadcast_object,
    gather_objects,
    leave_process_group,
    setup_distributed,
)
from contriever.training.losses.inbatch import InBatchLoss
from contriever.training.losses.moco import MoCo
from contriever.training.losses.objective import Objective
from contriever.training.optim import NO_DECAY, build_optimizer, build_scheduler
from contriever.training.resume import (
    announce_resume_changes,
    output_lock,
    start_run_folder,
    write_run_manifest,
)

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
            model.path,
            pooling=model.pooling,
            normalize=model.normalize,
            max_length=model.max_length,
        )
    for option in ("lowercase", "normalize_text"):  # None keeps the loaded model's own (scratch: off)
        if getattr(model, option) is not None:
            setattr(encoder, option, getattr(model, option))
    given = {"query": model.query_prompt, "passage": model.passage_prompt}
    given = {name: text for name, text in given.items() if text is not None}
    if given:
        from contriever.model.encoder import merge_prompts

        encoder.prompts = merge_prompts(encoder.prompts, given, model.force_prompts, model.path or "default")
    if model.dropout is not None or model.attention_dropout is not None:
        encoder.set_dropout(model.dropout, model.attention_dropout)
    if model.freeze_embeddings:
        encoder.model.get_input_embeddings().requires_grad_(False)
    return encoder


def build_objective(loss: LossConfig, encoder: Encoder, seed: int = 0) -> Objective:
    """MoCo or the in-batch loss; `seed` draws MoCo's random starting queue, the same on every process."""
    if loss.kind == "moco":
        return MoCo(
            encoder,
            queue_size=loss.queue_size,
            momentum=loss.momentum,
            temperature=loss.temperature,
            label_smoothing=loss.label_smoothing,
            key_encoder_dropout=loss.key_encoder_dropout,
            queue_init=loss.queue_init,
            seed=seed,
        )
    return InBatchLoss(loss.temperature, loss.label_smoothing, gradcache_chunk=loss.gradcache_chunk)


def build_optimizer_and_scheduler(config: Config, encoder: Encoder):
    """AdamW, wrapped in SAM/ASAM when `optim.name` asks; the schedule drives AdamW's learning rate.

    Either way `optimizer.step(closure)` makes one update: AdamW calls the closure once, SAM twice
    (at the weights and at the sharpest point of their neighbourhood).
    """
    optim, steps = config.optim, config.train.steps
    optimizer = build_optimizer(
        encoder,
        lr=optim.lr,
        betas=optim.betas,
        eps=optim.eps,
        weight_decay=optim.weight_decay,
        no_decay=() if optim.decay_biases_and_norms else NO_DECAY,  # the official code decays everything
        decay_vectors=optim.decay_biases_and_norms,
    )
    warmup = min(optim.warmup_steps, steps)
    scheduler = build_scheduler(optimizer, warmup, steps, optim.scheduler, optim.final_lr_ratio)
    if optim.name in ("sam", "asam"):
        from contriever.training.asam import SAM

        adaptive = optim.name == "asam"
        optimizer = SAM(encoder.parameters(), optimizer, rho=optim.rho, eta=optim.eta, adaptive=adaptive)
    return optimizer, scheduler


def local_batch_size(train: TrainConfig, process: DistInfo) -> int:
    """This process's share of the global batch (each then split into `grad_accum` micro-batches)."""
    if train.batch_size % (process.world_size * train.grad_accum):
        raise ConfigError(
            f"train.batch_size {train.batch_size} must split evenly over {process.world_size} processes "
            f"x {train.grad_accum} accumulation steps"
        )
    return train.batch_size // process.world_size


def build_batches(config: Config, encoder: Encoder, process: DistInfo, local_batch: int):
    """The batch source: `next_batch()` gives token tensors; `state_dict()` makes resume exact."""
    if config.task == "pretrain":
        from contriever.training.batches import PretrainBatches

        return PretrainBatches(
            config,
            encoder.tokenizer,
            local_batch,
            process.rank,
            process.world_size,
            prompt_ids=encoder.prompt_token_ids(),
        )
    from contriever.training.batches import FinetuneBatches

    return FinetuneBatches(config, encoder, local_batch, process.rank, process.world_size)


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
            append_line(self.path, json.dumps(record))  # checked: a full disk raises DiskFullError


# ----- the training loop ------------------------------------------------------------------------------
def train(config: Config, output: str | Path) -> Path:
    """Train per `config`, writing into `output`; returns the folder of the final model.

    `output/` receives `config.json`, `metrics.jsonl`, `checkpoint.pt` (exact resume), `model/` (the
    trained encoder, loadable by `contriever evaluate --model`), `best/` when fine-tuning evaluates
    on its dev set (pretraining's evaluation only monitors: it may be a test split), `summary.json`
    (updates made, why it stopped, best dev score, minutes) and `training.png`. One run at a time
    per folder, and a resume only of the same run (keys safe on resume aside): see `resume.py`.
    """
    with output_lock(output, config.task):
        model = _train(config, Path(output))
    leave_process_group()
    return model


def _train(config: Config, output: Path) -> Path:
    process, cfg = setup_distributed(), config.train
    changes = start_run_folder(output, config.to_dict(), process.is_main)  # checks, then config.json
    torch.manual_seed(cfg.seed + process.rank)
    encoder = build_encoder(config).to(process.device)
    encoder.train()
    objective = build_objective(config.loss, encoder, cfg.seed).to(process.device)
    optimizer, scheduler = build_optimizer_and_scheduler(config, encoder)
    batches = build_batches(config, encoder, process, local_batch_size(cfg, process))
    evaluator = batches.evaluator() if cfg.eval_every else None
    parts = Parts(encoder, objective, optimizer, scheduler, batches)

    state = RunState()
    checkpoint = load_checkpoint(output / CHECKPOINT_NAME, map_location=process.device)
    if checkpoint is not None:
        state = resume(checkpoint, parts, process.rank)
    log = MetricsLog(output / METRICS_NAME, state.step if checkpoint is not None else None, process.is_main)
    announce_resume_changes(changes if checkpoint is not None else {}, state.step, log.write, process.is_main)
    progress = tqdm(
        total=cfg.steps,
        initial=state.step,
        desc=config.task,
        unit="step",
        disable=not process.is_main,
        dynamic_ncols=True,
    )
    while state.step < cfg.steps:
        batch = batches.next_batch()
        stats = optimizer.step(
            partial(forward_backward, encoder, objective, optimizer, batch, config, process)
        )
        scheduler.step()
        objective.after_step(encoder)
        state.step += 1
        state.window_pairs += cfg.batch_size
        progress.update(1)
        last = state.step == cfg.steps
        if state.step % cfg.log_every == 0 or last:
            record = state.record(stats, scheduler.get_last_lr()[0], process)
            log.write(record)
            progress.set_postfix(loss=f"{record['loss']:.3f}", acc=f"{record.get('accuracy', 0):.2f}")
        out_of_time = state.out_of_time(cfg.max_minutes)
        if evaluator is not None and (state.step % cfg.eval_every == 0 or last or out_of_time):
            metrics = evaluate(evaluator, encoder, process)
            log.write({"step": state.step, **{f"eval/{name}": value for name, value in metrics.items()}})
            progress.write(
                f"step {state.step}: " + "  ".join(f"{n} {100 * v:.2f}" for n, v in metrics.items())
            )
            best = state.improved(metrics[config.eval.metric], cfg.early_stopping_patience)
            if best and process.is_main and config.task == "finetune":  # pretraining may watch a test split
                encoder.save(output / "best")
        if out_of_time:
            state.stop = f"time limit of {cfg.max_minutes} minutes"
        if state.step % cfg.save_every == 0 or last or state.stop:
            save_training_state(output / CHECKPOINT_NAME, state, parts, config, process)
        if state.stop:
            break
    progress.close()
    return finish(output, encoder, state, process)


# ----- one update ---------------------------------------------------------------------------------------
def forward_backward(
    encoder: Encoder, objective: Objective, optimizer, batch: dict, config: Config, process: DistInfo
) -> dict[str, float]:
    """The closure of `optimizer.step`: fresh gradients of this process's part of `batch`.

    Micro-batch by micro-batch (`train.grad_accum`), then averaged over processes and clipped to
    `optim.clip_norm`. Returns the statistics averaged over micro-batches, with `grad_norm` (the
    norm before clipping) when clipping is on.
    """
    optimizer.zero_grad(set_to_none=True)
    accum = config.train.grad_accum
    totals: dict[str, float] = {}
    for micro in split_batch(batch, len(batch["q_ids"]) // accum):
        micro = {name: tensor.to(process.device, non_blocking=True) for name, tensor in micro.items()}
        with autocast_context(process.device, config.train.precision):
            loss, stats = objective.loss(encoder, micro)
        (loss / accum).backward()  # outside autocast, as torch recommends
        stats["loss"] = float(loss.detach())
        for name, value in stats.items():
            totals[name] = totals.get(name, 0.0) + float(value) / accum
    all_reduce_gradients(encoder, process)
    if config.optim.clip_norm > 0:
        totals["grad_norm"] = float(
            torch.nn.utils.clip_grad_norm_(encoder.parameters(), config.optim.clip_norm)
        )
    return totals


# ----- the run's state, checkpoints, evaluation and the end ----------------------------------------------
@dataclass
class Parts:
    """Everything whose state a checkpoint holds besides the run's own counters."""

    encoder: Encoder
    objective: Objective
    optimizer: object  # torch.optim.Optimizer, or SAM around one
    scheduler: torch.optim.lr_scheduler.LRScheduler
    batches: object  # PretrainBatches | FinetuneBatches


@dataclass
class RunState:
    """Counters of the run: updates made, the best evaluation score, why it stopped (None: going on)."""

    step: int = 0
    best: float = -math.inf
    evals_since_best: int = 0
    stop: str | None = None
    started: float = field(default_factory=time.time)
    window_start: float = field(default_factory=time.time)
    window_pairs: int = 0

    def record(self, stats: dict, lr: float, process: DistInfo) -> dict:
        """The log line of this step: statistics averaged over processes, throughput since the last line."""
        stats = {name: all_reduce_mean(value, process) for name, value in stats.items()}
        now = time.time()
        record = {
            "step": self.step,
            **{name: round(value, 6) for name, value in stats.items()},
            "lr": lr,
            "pairs_per_s": round(self.window_pairs / max(now - self.window_start, 1e-9), 2),
            "elapsed_s": round(now - self.started, 1),
        }
        self.window_start, self.window_pairs = time.time(), 0
        return record

    def out_of_time(self, max_minutes: float) -> bool:
        """Whether `max_minutes` (0: no limit) have passed; rank 0's clock decides, so all stop together."""
        if not max_minutes:
            return False
        return broadcast_object((time.time() - self.started) / 60 >= max_minutes)

    def improved(self, score: float, patience: int) -> bool:
        """Count an evaluation; True when it is the best so far. Sets `stop` after `patience` without gain."""
        if score > self.best:
            self.best, self.evals_since_best = score, 0
            return True
        self.evals_since_best += 1
        if patience and self.evals_since_best >= patience:
            self.stop = f"early stopping: no gain in {self.evals_since_best} evaluations"
        return False


def evaluate(evaluator, encoder: Encoder, process: DistInfo) -> dict[str, float]:
    """Metrics of the encoder as it is now, computed on the main process and shared with the others."""
    metrics = broadcast_object(evaluator(encoder) if process.is_main else {})
    encoder.train()
    return metrics


def save_training_state(path: Path, state: RunState, parts: Parts, config: Config, process: DistInfo) -> None:
    """Everything an exact resume needs; every process contributes its data position and RNG state."""
    checkpoint = {
        "step": state.step,
        "best": state.best,
        "evals_since_best": state.evals_since_best,
        "encoder": parts.encoder.state_dict(),
        "objective": parts.objective.state_dict(),
        "optimizer": parts.optimizer.state_dict(),
        "scheduler": parts.scheduler.state_dict(),
        "batches": gather_objects(parts.batches.state_dict()),
        "rng": gather_objects(rng_state()),
        "config": config.to_dict(),
    }
    if process.is_main:
        save_checkpoint(path, checkpoint)
        write_run_manifest(path.parent)


def resume(checkpoint: dict, parts: Parts, rank: int) -> RunState:
    """Put every part back where the checkpoint left it; returns the run's counters."""
    parts.encoder.load_state_dict(checkpoint["encoder"])
    parts.objective.load_state_dict(checkpoint["objective"] or {})  # None: older in-batch checkpoints
    parts.optimizer.load_state_dict(checkpoint["optimizer"])
    parts.scheduler.load_state_dict(checkpoint["scheduler"])
    parts.batches.load_state_dict(checkpoint["batches"][rank])
    set_rng_state(checkpoint["rng"][rank])
    return RunState(checkpoint["step"], checkpoint["best"], checkpoint["evals_since_best"])


def finish(output: Path, encoder: Encoder, state: RunState, process: DistInfo) -> Path:
    """Save the final model, `summary.json` and the training plot; returns the model to use (best, else last)."""
    if process.is_main:
        encoder.save(output / "model")
        summary = {
            "steps": state.step,
            "stop": state.stop or "finished",
            "best": state.best if math.isfinite(state.best) else None,
            "minutes": (time.time() - state.started) / 60,
        }
        write_json(output / "summary.json", summary)
        write_run_manifest(output)
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
