"""Export a training run to a manifest, evaluate it and audit it (``bitspike export``).

The conversion itself (units, requantization constants, one layer per export
graph node) is :mod:`bitspike.host.convert`, re-exported here under its old
names; this module adds what needs the training code and the golden model on
top of it: :func:`export_run` and :func:`evaluate_manifest`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bitspike.errors import BitspikeError, RangeError
from bitspike.manifest import Manifest

from .checkpoint import load_checkpoint
from .convert import DEFAULT_CURRENT_BITS, HEADROOM, MULT_BITS, ExportContext, export_model  # noqa: F401  (re-exported)

__all__ = ["export_run", "export_model", "evaluate_manifest", "DEFAULT_CURRENT_BITS", "MULT_BITS"]


def evaluate_manifest(manifest: Manifest, images: np.ndarray, labels: np.ndarray, batch_size: int = 500) -> tuple[float, np.ndarray]:
    """Deploy accuracy: the integer golden model on ``uint8`` images; returns (accuracy, predicted classes).

    Raises
    ------
    RangeError
        If a register leaves its analysed range (a bug in the export or the analysis).
    """
    from .data import images_for_manifest
    from .golden import GoldenModel

    golden = GoldenModel(manifest)
    ints = images_for_manifest(images, manifest)
    result = golden.run_batches(ints, batch_size=batch_size)
    pred = result.classes.numpy()
    return float((pred == np.asarray(labels)).mean()) if len(labels) else float("nan"), pred


def export_run(run_dir: str | os.PathLike, out_path: str | os.PathLike | None = None,
               current_bits: int = DEFAULT_CURRENT_BITS, data: str | None = None) -> tuple[Manifest, dict[str, Any]]:
    """Export a training run to a manifest and evaluate it.

    Parameters
    ----------
    run_dir
        The training run's folder (holds ``checkpoint.ckpt``).
    out_path
        Where to write the manifest (``.bsm``); ``None`` writes nothing.
    current_bits
        k of the learnable neurons (resolution of currents: V_th / 2**k).
    data
        Folder of the data set, if the run used ``--data``; default: the run's own setting.

    Returns
    -------
    (Manifest, dict)
        The manifest and a summary: ``float_accuracy`` (fake-quantized PyTorch model),
        ``deploy_accuracy`` (integer golden model), both fractions of the test set;
        ``accuracy_gap_points``, ``agreement`` (fraction of test images where both predict the
        same class), ``audit`` (:func:`bitspike.host.agreement.audit`: how many test images provably
        agree; the others sit within rounding distance of a spike-count boundary), ``avg_bits`` (``w``, ``s``, ``t``), ``bit_budget``, ``s_ace``,
        ``weight_memory_bits``, ``first_layer``, ``layers``, ``digest``, ``manifest``.
    """
    from bitspike.analysis import network_stats

    from .agreement import audit
    from .data import load_dataset
    from .train import evaluate, model_from_checkpoint

    run_dir = Path(run_dir)
    state = load_checkpoint(run_dir)
    model, cfg = model_from_checkpoint(state)
    train_ds = load_dataset(cfg.dataset, "train", data or cfg.data)
    test_ds = load_dataset(cfg.dataset, "test", data or cfg.data)
    calib = train_ds.images[:: max(1, len(train_ds) // 512)][:512]
    float_acc = evaluate(model, test_ds.images, test_ds.labels, torch.device("cpu"))
    history = state["history"]
    info = {
        "source": "bitspike train",
        "run_dir": str(run_dir),
        "dataset": cfg.dataset,
        "arch": cfg.arch,
        "target": list(cfg.target),
        "uniform": None if cfg.uniform is None else list(cfg.uniform),
        "epochs": int(state["epoch"]),
        "seed": cfg.seed,
        "float_accuracy": float_acc,
    }
    name = f"{cfg.dataset}-{cfg.arch}"
    manifest = export_model(model, calib, name=name, classes=list(state.get("classes") or test_ds.classes),
                            info=info, current_bits=current_bits)
    try:
        deploy_acc, pred = evaluate_manifest(manifest, test_ds.images, test_ds.labels)
    except RangeError as exc:
        raise BitspikeError(f"export produced a manifest whose registers overflow their analysed ranges: {exc}") from exc
    with torch.no_grad():
        fq = torch.cat([model(torch.as_tensor(test_ds.images[i:i + 1000]).float() / 255.0).argmax(1)
                        for i in range(0, len(test_ds), 1000)]).numpy()
    report = audit(model, manifest, test_ds.images)
    if report.violations:
        raise BitspikeError("export: the integer network disagrees with the trained one on samples the rounding "
                            f"bounds certify ({len(report.violations)}; first: {report.violations[0]})")
    manifest = Manifest.build(manifest.name, manifest.input, manifest.layers, manifest.classes,
                              {**info, "deploy_accuracy": deploy_acc})
    if out_path is not None:
        manifest.save(out_path)
    stats = network_stats(manifest)
    first = stats.layers[[i for i, s in enumerate(stats.layers) if s.has_weights][0]]
    avg_bits = {"w": stats.avg_w_bits, "s": stats.avg_s_bits, "t": stats.avg_timesteps}
    if cfg.first_layer == "learn" and history:
        # the paper's averages leave the fixed first layer out; a learning first layer's B_w and T are
        # allocated like the others', so the training's averages (which count them) are the ones to report
        avg_bits = {k: float(history[-1]["avg_bits"][k]) for k in "wst"}
    summary = {
        "manifest": None if out_path is None else str(out_path),
        "digest": manifest.digest(),
        "dataset": cfg.dataset,
        "arch": cfg.arch,
        "test_images": len(test_ds),
        "float_accuracy": float_acc,
        "deploy_accuracy": deploy_acc,
        "accuracy_gap_points": 100.0 * abs(float_acc - deploy_acc),
        "agreement": float((fq == pred).mean()),
        "audit": report.to_json(),
        "avg_bits": avg_bits,
        "bit_budget": avg_bits["w"] * avg_bits["s"] * avg_bits["t"],
        "s_ace": stats.s_ace,
        "s_ace_all": stats.s_ace_all,
        "weight_memory_bits": stats.weight_memory_bits,
        "first_layer": {"name": first.name, "w_bits": first.w_bits, "s_bits": first.s_bits, "timesteps": first.timesteps},
        "layers": [{"name": l.name, "op": l.op, "w_bits": l.w_bits, "s_bits": l.s_bits, "timesteps": l.timesteps,
                    "k": l.k} for l in manifest.synaptic_layers],
        "epochs": int(state["epoch"]),
        "train_wall_s": float(history[-1]["wall_s"]) if history else None,
    }
    return manifest, summary
