"""Figures that read at a glance: spikes per layer and timestep, resources per engine, accuracy against bit budget,
per-layer bits over the epochs of a training run.

Training-time figures (bits per layer, accuracy per epoch) live in
:mod:`bitspike.host.plots`. Everything here writes PNGs with matplotlib's
non-interactive back end and returns the path written.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"figure.dpi": 110, "font.size": 9, "axes.spines.top": False, "axes.spines.right": False})
    return plt


def _save(plt, fig, path: str | Path) -> Path:
    """Lay out, write the PNG (creating its folder) and free the figure."""
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def spikes_per_layer(trace: Mapping[str, Any], path: str | Path, manifest: Any = None,
                     title: str = "Spikes per layer and timestep") -> Path:
    """Firing rate and mean spike level per layer and timestep, from a golden-model trace.

    Parameters
    ----------
    trace
        ``GoldenResult.trace`` (layer name → LayerTrace with ``s`` of shape ``(T, N, ...)``).
    path
        PNG to write.
    manifest
        Optional; gives each layer's B_s so that spike levels are shown as a fraction of 2**B_s − 1.
    """
    plt = _pyplot()
    layers = [(name, t) for name, t in trace.items() if getattr(t, "s", None) is not None]
    qmax = {}
    if manifest is not None:
        qmax = {l.name: 2**l.s_bits - 1 for l in manifest.synaptic_layers}
    fig, axes = plt.subplots(1, 2, figsize=(max(6.0, 2.0 * len(layers) + 2), 3.2))
    width = 0.8
    for i, (name, tr) in enumerate(layers):
        s = tr.s.double()
        T = s.shape[0]
        flat = s.reshape(T, -1)
        q = qmax.get(name) or max(1.0, float(flat.max()))
        rate = (flat > 0).double().mean(dim=1).tolist()
        level = (flat.mean(dim=1) / q).tolist()
        for t in range(T):
            x = i + (t - (T - 1) / 2) * width / T
            color = plt.cm.viridis(t / max(1, T - 1) * 0.85)
            axes[0].bar(x, rate[t], width / T * 0.9, color=color, label=f"t = {t}" if i == 0 or T > 1 else None)
            axes[1].bar(x, level[t], width / T * 0.9, color=color)
    for ax, ylabel in zip(axes, ["firing rate (spike > 0)", "mean spike / (2^B_s − 1)"]):
        labels = [f"{n}\nB_s={qmax[n].bit_length()}" if n in qmax else n for n, _ in layers]
        ax.set_xticks(range(len(layers)), labels)
        ax.set_ylabel(ylabel)
        ax.set_ylim(0, 1.05)
    handles, labels = axes[0].get_legend_handles_labels()
    uniq = dict(zip(labels, handles))
    axes[0].legend(uniq.values(), uniq.keys(), frameon=False, fontsize=7)
    fig.suptitle(title)
    return _save(plt, fig, path)


def resources_per_engine(layers: Sequence[Mapping[str, Any]], path: str | Path, title: str = "Resources per engine") -> Path:
    """Grouped bars of LUT / FF / BRAM / DSP per engine (rows of a gen or build report that carry them)."""
    plt = _pyplot()
    keys = ["lut", "ff", "bram", "dsp"]
    rows = [r for r in layers if any(k in (r.get("resources") or {}) for k in keys)]
    fig, axes = plt.subplots(1, len(keys), figsize=(2.6 * len(keys), 3.0))
    for ax, key in zip(axes, keys):
        values = [float((r.get("resources") or {}).get(key, 0)) for r in rows]
        ax.bar(range(len(rows)), values, color="#4c72b0")
        ax.set_xticks(range(len(rows)), [r["name"] for r in rows], rotation=45, ha="right")
        ax.set_title(key.upper())
    fig.suptitle(title)
    return _save(plt, fig, path)


def accuracy_vs_bit_budget(runs: Sequence[Mapping[str, Any]], path: str | Path, title: str = "Accuracy against bit budget") -> Path:
    """Scatter of accuracy against bit budget; each run has ``label``, ``bit_budget``, ``accuracy``, ``kind``."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(4.8, 3.4))
    markers = {"adaptive": ("o", "#c44e52"), "uniform": ("s", "#4c72b0")}
    for kind, (marker, color) in markers.items():
        pts = [r for r in runs if r.get("kind") == kind]
        if pts:
            ax.scatter([r["bit_budget"] for r in pts], [r["accuracy"] for r in pts], marker=marker, color=color, label=kind)
            for r in pts:
                ax.annotate(r.get("label", ""), (r["bit_budget"], r["accuracy"]), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.set_xlabel("bit budget  B̄w·B̄s·T̄")
    ax.set_ylabel("accuracy (%)")
    ax.set_title(title)
    ax.legend(frameon=False)
    return _save(plt, fig, path)


def accuracy_vs_luts(runs: Sequence[Mapping[str, Any]], path: str | Path,
                     title: str = "Accuracy against Yosys LUTs") -> Path:
    """Accuracy against measured LUTs, one marker per run kind, with the Pareto front drawn.

    Each run has ``label``, ``luts``, ``accuracy`` (percent) and ``kind`` (any string; one colour each).
    The front joins the runs that no other run beats on both (fewer LUTs and higher accuracy).
    """
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.4, 3.6))
    styles = [("s", "#4c72b0"), ("o", "#c44e52"), ("^", "#55a868"), ("D", "#8172b2"), ("v", "#ccb974")]
    kinds = list(dict.fromkeys(r["kind"] for r in runs))
    for kind, (marker, color) in zip(kinds, styles * (1 + len(kinds) // len(styles))):
        pts = [r for r in runs if r["kind"] == kind]
        ax.scatter([r["luts"] for r in pts], [r["accuracy"] for r in pts], marker=marker, color=color, label=kind)
        for r in pts:
            ax.annotate(r.get("label", ""), (r["luts"], r["accuracy"]), fontsize=7, xytext=(3, 3),
                        textcoords="offset points")
    front = []
    for r in sorted(runs, key=lambda r: (r["luts"], -r["accuracy"])):
        if not front or r["accuracy"] > front[-1]["accuracy"]:
            front.append(r)
    if len(front) > 1:
        ax.step([r["luts"] for r in front], [r["accuracy"] for r in front], where="post", color="grey", lw=0.8,
                alpha=0.7, label="Pareto front")
    ax.set_xlabel("LUTs (Yosys synth_ecp5)")
    ax.set_ylabel("accuracy (%)")
    ax.set_title(title)
    ax.legend(frameon=False, fontsize=7)
    return _save(plt, fig, path)


def bits_over_epochs(history: Sequence[Mapping[str, Any]], path: str | Path, title: str = "Bits per layer over the epochs") -> Path:
    """B_w, B_s and T of every layer after each epoch (one panel each), from a run's ``metrics.json`` epochs.

    Parameters
    ----------
    history
        The ``epochs`` list of a run's metrics.json: each record has ``epoch``, ``layers`` (``name``,
        ``w_bits``, ``s_bits``, ``timesteps``, ``fixed``) and optionally ``frozen``.
    path
        PNG to write.

    Layers whose bits are fixed (the paper's 8/8 first layer) are left out, so that the scale shows
    the allocation. Lines are offset by a few hundredths of a bit per layer so that equal values
    stay visible as separate lines.
    """
    plt = _pyplot()
    epochs = [int(h["epoch"]) for h in history]
    names = [l["name"] for l in history[-1]["layers"] if not l.get("fixed")] if history else []
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.2), sharex=True)
    keys = (("w_bits", "weight bits B_w"), ("s_bits", "spike bits B_s"), ("timesteps", "timesteps T"))
    for ax, (key, label) in zip(axes, keys):
        for i, name in enumerate(names):
            off = (i - (len(names) - 1) / 2) * 0.03
            values = [next(l[key] for l in h["layers"] if l["name"] == name) + off for h in history]
            ax.plot(epochs, values, marker=".", label=name, color=plt.cm.tab10(i % 10))
        frozen = [e for e, h in zip(epochs, history) if h.get("frozen")]
        if frozen:
            ax.axvspan(min(frozen) - 0.5, max(frozen) + 0.5, color="grey", alpha=0.15)
        ax.set_title(label)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    if names:
        axes[0].legend(frameon=False, fontsize=7)
    fig.suptitle(title + ("  (grey: bits frozen)" if any(h.get("frozen") for h in history) else ""))
    return _save(plt, fig, path)
