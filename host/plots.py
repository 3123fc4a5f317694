"""Plots of a training run: bits per layer and accuracy per epoch (PNG files in the run folder)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["plot_run"]


def plot_run(run_dir: str | Path, history: list[dict[str, Any]]) -> list[Path]:
    """Write ``bits.png`` (B_w, B_s, T per layer, per epoch; with ``--cost``, the network's cost against its
    budget in a fourth panel) and ``accuracy.png``; return their paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run_dir = Path(run_dir)
    if not history:
        return []
    epochs = [h["epoch"] for h in history]
    names = [l["name"] for l in history[-1]["layers"]]
    cost = [h.get("cost") for h in history]
    panels = 4 if all(cost) else 3
    fig, axes = plt.subplots(1, panels, figsize=(13 if panels == 3 else 17, 3.8), sharex=True)
    if panels == 4:
        ax = axes[3]
        ax.plot(epochs, [c["value"] for c in cost], marker=".", label="network")
        if cost[-1].get("budget") is not None:
            ax.axhline(cost[-1]["budget"], color="#c44e52", lw=0.8, ls="--", label="budget")
        ax.set_title(cost[-1].get("unit_name", cost[-1]["unit"]))
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    for ax, key, title in zip(axes, ("w_bits", "s_bits", "timesteps"), ("weight bits B_w", "spike bits B_s", "timesteps T")):
        for i, name in enumerate(names):
            ax.plot(epochs, [h["layers"][i][key] for h in history], marker=".", label=name)
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    frozen = [h["epoch"] for h in history if h.get("frozen")]
    if frozen:
        for ax in axes:
            ax.axvspan(min(frozen) - 0.5, max(frozen) + 0.5, color="grey", alpha=0.15, label="bits frozen")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    bits_path = run_dir / "bits.png"
    fig.savefig(bits_path, dpi=100)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 3.8))
    ax.plot(epochs, [100 * h["test_accuracy"] for h in history], marker=".", label="test")
    ax.plot(epochs, [100 * h["train_accuracy"] for h in history], marker=".", label="train")
    ax.set_xlabel("epoch")
    ax.set_ylabel("accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    acc_path = run_dir / "accuracy.png"
    fig.savefig(acc_path, dpi=100)
    plt.close(fig)
    return [bits_path, acc_path]
