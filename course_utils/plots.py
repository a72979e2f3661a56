"""Plots the notebooks share: loss curves from a Trainer's log history, and memory breakdowns as bars."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

from .memory import MemoryEstimate


def loss_points(log_history: list[dict], key: str) -> tuple[list[int], list[float]]:
    """(steps, values) of one logged quantity ("loss" for training, "eval_loss" for evaluation)."""
    points = [(entry["step"], entry[key]) for entry in log_history if key in entry and "step" in entry]
    return [s for s, _ in points], [v for _, v in points]


def plot_loss_curves(log_history: list[dict], title: str = "Training and evaluation loss", ax=None):
    """Training and evaluation loss against the training step, from `trainer.state.log_history`."""
    train_steps, train_loss = loss_points(log_history, "loss")
    eval_steps, eval_loss = loss_points(log_history, "eval_loss")
    if not train_steps and not eval_steps:
        raise ValueError("the log history holds no 'loss' or 'eval_loss' entries: set logging_steps and "
                         "eval_strategy in TrainingArguments, and train first")
    if ax is None:
        _, ax = plt.subplots(figsize=(7, 4))
    if train_steps:
        ax.plot(train_steps, train_loss, marker=".", label="training loss")
    if eval_steps:
        ax.plot(eval_steps, eval_loss, marker="o", label="evaluation loss (held-out text)")
    ax.set_xlabel("training step")
    ax.set_ylabel("cross-entropy loss (nats per token)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    return ax.figure


def plot_memory_breakdown(estimates: dict[str, MemoryEstimate], measured: dict[str, float] | None = None,
                          unit: str = "GB", title: str = "Estimated peak memory of a training step",
                          capacities: dict[str, float] | None = None, ax=None):
    """One stacked bar per estimate (weights, gradients, optimizer states, ...). `measured` (bytes, by the
    same labels) adds a black marker where the measurement landed; `capacities` (bytes, by a name such as
    "T4") draws the memory of a device as a horizontal line."""
    scale = {"GB": 1e9, "MB": 1e6}[unit]
    labels = list(estimates)
    components = list(next(iter(estimates.values())).components)
    if ax is None:
        _, ax = plt.subplots(figsize=(max(7, 1.6 * len(labels) + 4.5), 4.5))
    x = np.arange(len(labels))
    bottom = np.zeros(len(labels))
    for name in components:
        sizes = np.array([estimates[label].components[name] / scale for label in labels])
        if sizes.any():
            ax.bar(x, sizes, bottom=bottom, width=0.6, label=name)
            bottom += sizes
    if measured:
        xs = [i for i, label in enumerate(labels) if label in measured]
        ax.scatter(xs, [measured[labels[i]] / scale for i in xs], color="black", marker="D", zorder=3,
                   label="measured peak")
    for (name, size), style in zip((capacities or {}).items(), [":", "--", "-.", "-"] * 4):
        ax.axhline(size / scale, color="black", linestyle=style, linewidth=1,
                   label=f"{name} ({size / scale:,.0f} {unit})")
    ax.set_xticks(x, labels, rotation=20 if len(labels) > 3 else 0, ha="right" if len(labels) > 3 else "center")
    ax.set_ylabel(f"memory ({unit})")
    ax.set_title(title)
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1))
    ax.figure.tight_layout()
    return ax.figure
