"""`contriever pretrain` and `contriever finetune`: training from a TOML config, resumable."""

from __future__ import annotations

import argparse
import os

from contriever.cli.argtypes import output_folder


def _train(args: argparse.Namespace, task: str) -> int:
    from contriever.training.config import load_config

    config = load_config(args.config, [f"task={task}", *(args.set or [])] if task else args.set)
    if task == "finetune":
        from contriever.training.finetune import run_finetune

        final = run_finetune(config, args.output, rounds=args.rounds)
    else:
        from contriever.training.trainer import train

        final = train(config, args.output)
    if os.environ.get("RANK", "0") == "0":  # under torchrun, one line, not one per process
        print(f"model: {final}")
    return 0


def cmd_pretrain(args: argparse.Namespace) -> int:
    return _train(args, "pretrain")


def cmd_finetune(args: argparse.Namespace) -> int:
    return _train(args, "finetune")


def add_subcommands(sub, make_subcommand) -> None:
    for name, func, summary, example in (
        (
            "pretrain",
            cmd_pretrain,
            "unsupervised contrastive pretraining on prepared token streams",
            "contriever pretrain --config configs/cpu-small.toml --output runs/cpu-small",
        ),
        (
            "finetune",
            cmd_finetune,
            "supervised / few-shot fine-tuning on labelled queries (two rounds: random, then mined negatives)",
            "contriever finetune --config configs/fewshot-scifact.toml --rounds 1 --output runs/fewshot",
        ),
    ):
        p = make_subcommand(sub, name, summary, example, func)
        p.add_argument("--config", help="TOML config (see configs/); None: the task's defaults")
        p.add_argument(
            "--set", action="append", metavar="KEY=VALUE", help="override a config key, e.g. train.steps=100"
        )
        p.add_argument(
            "--output",
            type=output_folder,
            required=True,
            help="training folder (rerun the command to resume)",
        )
        if name == "finetune":
            p.add_argument(
                "--rounds",
                type=int,
                choices=(1, 2),
                default=2,
                help="1: train once; 2: random negatives, mine with that model, train again with hard ones",
            )
