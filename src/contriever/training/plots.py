"""Training curves from `metrics.jsonl`: loss, positive accuracy, embedding spread, learning rate and
evaluation scores, one panel each, written as a PNG beside the metrics."""

from __future__ import annotations

import json
from pathlib import Path

from contriever.io import atomic_write


def read_metrics(path: str | Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def plot_training(metrics_path: str | Path, png_path: str | Path) -> Path | None:
    """Draw the curves; returns the PNG path, or None when there is nothing to draw yet."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = read_metrics(metrics_path)
    train = [r for r in records if "loss" in r]
    evals = [r for r in records if any(k.startswith("eval/") for k in r)]
    if not train:
        return None
    panels = [
        ("loss", ["loss"]),
        ("positive accuracy", ["accuracy"]),
        ("embedding std (collapse alarm)", ["q_std", "k_std"]),
        ("learning rate", ["lr"]),
    ]
    if evals:
        panels.append(("evaluation", sorted({k for r in evals for k in r if k.startswith("eval/")})))
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3.2))
    for ax, (title, keys) in zip(axes, panels):
        source = evals if title == "evaluation" else train
        for key in keys:
            points = [(r["step"], r[key]) for r in source if key in r]
            if points:
                steps, values = zip(*points)
                ax.plot(
                    steps,
                    values,
                    marker="o" if title == "evaluation" else None,
                    markersize=3,
                    label=key.removeprefix("eval/"),
                )
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        if len(keys) > 1:
            ax.legend(fontsize=8)
    fig.tight_layout()
    png_path = Path(png_path)
    try:
        with atomic_write(png_path, "wb") as handle:  # checked: a full disk raises DiskFullError
            fig.savefig(handle, dpi=110, format="png")
    finally:
        plt.close(fig)
    return png_path
