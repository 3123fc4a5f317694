"""Host-side helpers for the generated top's interface (docs/HARDWARE_INTERFACE.md).

* :func:`input_order` — the order in which an input's elements are streamed.
* :func:`golden_tap_sequence` — the values a debug tap must show, in order,
  for one sample of a golden-model trace.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from bitspike.errors import HardwareError
from bitspike.manifest import Manifest
from bitspike.ops.stream import hwc_order, input_order, stream_order  # noqa: F401  (re-exported)

__all__ = ["input_order", "hwc_order", "stream_order", "golden_tap_sequence", "stream_values"]


def stream_values(tensor, order: np.ndarray) -> list[int]:
    """One sample's tensor as the list of values in stream order ``order`` (flat C-major indices)."""
    flat = np.asarray(tensor, dtype=np.int64).reshape(-1)
    return [int(v) for v in flat[order]]


def golden_tap_sequence(manifest: Manifest, golden_trace: Mapping[str, Any], sample_index: int,
                        tap: Mapping[str, Any] | None = None, *, layer: str | None = None,
                        kind: str | None = None) -> list[int]:
    """The values tap ``tap`` (an entry of ``report.json["taps"]``, or ``layer``/``kind``) shows for one sample.

    Parameters
    ----------
    golden_trace
        ``GoldenModel.run(images, trace=True).trace`` (layer name → LayerTrace).
    sample_index
        Which sample of the traced batch.

    Returns
    -------
    list of int
        ``x``/``out``/``acc``: one value per element in stream order (HWC or flat).
        ``spk``: one value per input element in stream order, the element's T
        spikes packed into one integer, t = 0 in the lowest ``s_bits`` bits.
        ``cnt`` (a fused layer): the spike counts Σ_t s_t of the layer it feeds, one per output element.
    """
    if tap is not None:
        layer, kind = tap["layer"], tap["kind"]
    if layer is None or kind is None:
        raise HardwareError("golden_tap_sequence needs a tap entry or layer= and kind=")
    lt = golden_trace[layer]
    man_layer = manifest.layer(layer)
    n = sample_index
    in_order = stream_order(manifest, man_layer.inputs[0])
    out_order = stream_order(manifest, layer)
    stepped = getattr(man_layer, "stepped", None)
    if stepped is not None and stepped.mode == "stepped":
        return _stepped_sequence(lt, n, kind, in_order, out_order, man_layer)
    if kind == "x":
        return stream_values(lt.x[n], in_order)
    if kind == "out":
        return stream_values(lt.out[n], out_order)
    if kind == "acc":
        return stream_values(lt.acc[n], out_order)
    if kind == "cnt":
        # a fused boundary's stream: the spike counts of the one engine it feeds, in this layer's stream order
        from .fuse import fused_reader

        reader = fused_reader(manifest, layer)
        return stream_values(np.asarray(golden_trace[reader.name].s[:, n], dtype=np.int64).sum(axis=0), out_order)
    if kind == "spk":
        s = np.asarray(lt.s[:, n], dtype=np.int64)  # (T, *in_shape)
        T = s.shape[0]
        per_t = [stream_values(s[t], in_order) for t in range(T)]
        bits = man_layer.s_bits
        return [sum(per_t[t][i] << (t * bits) for t in range(T)) for i in range(len(per_t[0]))]
    raise HardwareError(f"unknown tap kind {kind!r} (expected x, spk, acc, out or cnt)")


def _stepped_sequence(lt, n: int, kind: str, in_order: np.ndarray, out_order: np.ndarray, layer) -> list[int]:
    """A stepped layer's taps (:mod:`bitspike.rtl_templates.stepped`): values that change per step come
    step-major (all elements of step 0, then step 1, …), one spike per beat; a constant input or the
    last layer's summed logits come once."""
    T = layer.timesteps

    def values(tensor, order, per_step: bool) -> list[int]:
        if not per_step:
            return stream_values(tensor[n], order)
        return [v for t in range(T) for v in stream_values(tensor[t, n], order)]

    if kind == "x":  # [T, N, ...] when the input changes per step, else [N, ...]
        return values(lt.x, in_order, lt.x.dim() == len(layer.in_shape) + 2)
    if kind == "spk":
        return values(lt.s, in_order, True)
    if kind in ("acc", "out"):
        tensor = lt.acc if kind == "acc" else lt.out
        return values(tensor, out_order, tensor.dim() == len(layer.out_shape) + 2)
    raise HardwareError(f"unknown tap kind {kind!r} (expected x, spk, acc, out or cnt)")
