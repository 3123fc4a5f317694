"""The generation report: ``report.json`` (sorted keys, byte-identical for equal input) and ``report.md``.

Writing: :func:`build_report` (from the plan) and :meth:`Report.write`.
Reading: :func:`read_report` returns a :class:`ReportView`, the one typed
reader of a generated folder's ``report.json`` for every consumer
(co-simulation, board builds, the demo): it names the file and the missing
key when something is wrong, and fills the defaults of reports from older
generators.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from bitspike.errors import HardwareError

from .ir import Plan

__all__ = ["Report", "build_report", "read_report", "ReportView", "TapView", "REQUIRED_KEYS"]

#: keys every consumer needs (docs/HARDWARE_INTERFACE.md); the others have defaults
REQUIRED_KEYS = ("top", "verilog_files", "input_bits", "input_size", "input_order", "num_classes", "result_width")


@dataclass(frozen=True)
class TapView:
    """One debug tap of a generated design (an entry of ``report.json`` ``taps``)."""

    layer: str
    index: int
    kind: str
    port: str
    width: int
    signed: bool
    order: str = "flat"
    count: int = 0  # values per inference (0: not known, e.g. a design from an older generator)
    lanes: int = 1  # values per record (a vector stream's tap; ``width`` bits each, element 0 lowest)

    @property
    def port_width(self) -> int:
        """Bits of the tap port: ``lanes`` values of ``width`` bits."""
        return self.width * self.lanes

    @property
    def records(self) -> int:
        """Records per inference (``count`` values, ``lanes`` a record)."""
        return self.count // self.lanes

    def values(self, raw: np.ndarray) -> np.ndarray:
        """Raw port records → the values they carry, in stream order (:meth:`to_int` of each lane).

        ``raw`` is ``[n, words]`` 64-bit words of ``port_width`` bits; a scalar tap is :meth:`to_int`.
        """
        if self.lanes == 1:
            return self.to_int(raw)
        v = np.asarray(raw, dtype=np.uint64)
        if v.ndim == 1:
            v = v.reshape(-1, 1)
        words = max(1, -(-self.width // 64))
        mask = (1 << self.width) - 1
        split = np.zeros((len(v) * self.lanes, words), dtype=np.uint64)
        for r, row in enumerate(v.tolist()):
            whole = sum(int(w) << (64 * k) for k, w in enumerate(row))
            for j in range(self.lanes):
                x = (whole >> (j * self.width)) & mask
                for k in range(words):
                    split[r * self.lanes + j, k] = (x >> (64 * k)) & (2**64 - 1)
        return self.to_int(split)

    def to_int(self, raw: np.ndarray) -> np.ndarray:
        """Raw unsigned port values → integers (sign-extended when the tap is signed).

        ``raw`` is ``[n]`` or ``[n, words]`` 64-bit words, least significant first.
        Values that fit int64 come back as an int64 array, wider ones (packed
        spikes of T·B_s ≥ 64 bits, wide accumulators) as an object array of Python ints.
        """
        v = np.asarray(raw, dtype=np.uint64)
        if v.ndim == 1:
            v = v.reshape(-1, 1)
        if self.width < 64 or (self.width == 64 and self.signed):
            out = v[:, 0]
            if self.width < 64:
                out = out & np.uint64((1 << self.width) - 1)
            out = out.astype(np.int64)  # a 64-bit signed value wraps here into its two's complement, as wanted
            if self.signed and self.width < 64:
                out = np.where(out >= (1 << (self.width - 1)), out - (1 << self.width), out)
            return out
        mask = (1 << self.width) - 1
        vals = []
        for row in v:
            x = 0
            for k, w in enumerate(row.tolist()):
                x |= int(w) << (64 * k)
            x &= mask
            if self.signed and x >> (self.width - 1):
                x -= 1 << self.width
            vals.append(x)
        out = np.empty(len(vals), dtype=object)
        out[:] = vals
        return out


@dataclass(frozen=True)
class ReportView:
    """A generated design's ``report.json``, typed. ``data`` is the whole document as read."""

    path: Path
    top: str
    verilog_files: tuple[str, ...]
    input_bits: int
    input_size: int
    input_order: str
    num_classes: int
    result_width: int
    logit_width: int
    logit_signed: bool
    cycles_per_inference: int | None
    initiation_interval: int | None
    taps: tuple[TapView, ...]
    layers: tuple[Mapping[str, Any], ...]
    data: Mapping[str, Any] = field(repr=False, compare=False)

    @property
    def folder(self) -> Path:
        return self.path.parent

    @property
    def verilog_paths(self) -> tuple[Path, ...]:
        """The Verilog files as paths next to the report, top last."""
        return tuple(self.folder / f for f in self.verilog_files)

    @property
    def synthesis(self) -> Mapping[str, Any] | None:
        """The Yosys figures, when ``bitspike gen --synth`` ran."""
        return self.data.get("synthesis")

    def get(self, key: str, default: Any = None) -> Any:
        return self.data.get(key, default)

    @classmethod
    def read(cls, path: str | os.PathLike, *, check_files: bool = True) -> "ReportView":
        """Read a ``report.json`` (or the folder holding one) written by ``bitspike gen``.

        A subclass (:class:`bitspike.sim.design.DesignInfo`) reads into its own type.

        Parameters
        ----------
        path
            The file, or the generated folder.
        check_files
            Also check that every listed Verilog file exists next to the report.

        Raises
        ------
        HardwareError
            Naming the file: missing, unreadable, not JSON, a required key missing, or a listed
            Verilog file absent.
        """
        path = Path(path)
        if path.is_dir() or path.suffix != ".json":
            path = path / "report.json"
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise HardwareError(
                f"{path} not found: expected a folder written by 'bitspike gen' (Verilog files and report.json)"
            ) from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise HardwareError(f"cannot read {path}: {exc}") from exc
        if not isinstance(data, dict):
            raise HardwareError(f"{path}: expected a JSON object, got {type(data).__name__}")
        missing = [k for k in REQUIRED_KEYS if k not in data]
        if missing:
            raise HardwareError(f"{path} lacks the keys {missing} (docs/HARDWARE_INTERFACE.md lists them)")
        try:
            files = tuple(str(f) for f in data["verilog_files"])
            taps = tuple(
                TapView(t["layer"], int(t["index"]), t["kind"], t["port"], int(t["width"]), bool(t["signed"]),
                        t.get("order", "flat"), int(t.get("count", 0)), int(t.get("lanes", 1)))
                for t in data.get("taps") or []
            )
            view = cls(
                path=path, top=str(data["top"]), verilog_files=files, input_bits=int(data["input_bits"]),
                input_size=int(data["input_size"]), input_order=str(data["input_order"]),
                num_classes=int(data["num_classes"]), result_width=int(data["result_width"]),
                logit_width=int(data.get("logit_width", data["result_width"])),
                logit_signed=bool(data.get("logit_signed", True)),
                cycles_per_inference=data.get("cycles_per_inference"), initiation_interval=data.get("initiation_interval"),
                taps=taps, layers=tuple(data.get("layers") or ()), data=data,
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise HardwareError(f"{path}: malformed entry ({type(exc).__name__}: {exc}); docs/HARDWARE_INTERFACE.md "
                                "describes the format") from None
        if check_files:
            for f in view.verilog_paths:
                if not f.exists():
                    raise HardwareError(f"{path} lists Verilog file {f.name}, which is not in {view.folder}")
        return view


def read_report(path: str | os.PathLike, *, check_files: bool = True) -> ReportView:
    """Read a ``report.json`` (or the folder holding one) written by ``bitspike gen``: :meth:`ReportView.read`."""
    return ReportView.read(path, check_files=check_files)


@dataclass
class Report:
    """What ``bitspike gen`` produced. ``data`` is the JSON document (see docs/HARDWARE_INTERFACE.md)."""

    data: dict[str, Any]
    out_dir: Path | None = None
    plan: Plan | None = field(default=None, repr=False)

    def to_json(self) -> dict[str, Any]:
        return self.data

    def __getitem__(self, key: str) -> Any:
        return self.data[key]

    @property
    def verilog_paths(self) -> list[Path]:
        """Absolute paths of the Verilog files, top last."""
        assert self.out_dir is not None
        return [self.out_dir / f for f in self.data["verilog_files"]]

    def json_text(self) -> str:
        return json.dumps(self.data, indent=2, sort_keys=True) + "\n"

    def markdown(self) -> str:
        d = self.data
        lines = [
            f"# bitspike gen: {d['manifest_name']}",
            "",
            f"- manifest sha256 `{d['manifest_digest']}`",
            f"- folding: {d['fold']}" + (f" (LUT budget {d['max_luts']})" if d.get("max_luts") else ""),
            f"- predicted cycles per inference: **{d['cycles_per_inference']}**, initiation interval: **{d['initiation_interval']}**",
            f"- weight memory: {d['weight_memory_bits']} bits (bound Σ params·B_w = {d['weight_memory_bits_bound']})",
            f"- input: {d['input_size']} × {d['input_bits']}-bit ({d['input_order']}); results {d['result_width']} bits "
            f"({d['num_classes']} logits, then the class)",
        ]
        vectors = [f"{l['name']} → {l['vec_out']} per beat" for l in d["layers"] if l.get("vec_out", 1) != 1]
        if vectors:  # only designs with vector streams list them (the others' report stays as it was)
            lines.append(f"- vector streams (outputs per beat): {', '.join(vectors)}")
        lines += [
            "",
            "| # | layer | op | B_w | B_s | T | PEs | lanes | widths | memory bits | cycles |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for l in d["layers"]:
            widths = " ".join(f"{k}:{v}" for k, v in sorted(l["widths"].items()))
            lines.append(f"| {l['index']} | {l['name']} | {l['op']} | {l['w_bits'] or '-'} | {l['s_bits'] or '-'} | "
                         f"{l['timesteps'] or '-'} | {l['pes']} | {l['lanes']}{_taps(l)} | {widths} | {l['memory_bits']} | "
                         f"{l['cycles']} |")
        acts = [l for l in d["layers"] if "activation_memory" in l]
        if acts:  # conv engines: the input memory the window is read from
            lines += ["", "## Conv input memory", "",
                      "| layer | buffer | words | bits | smallest (words) | whole frame (bits) |", "|---|---|---|---|---|---|"]
            for l in acts:
                a = l["activation_memory"]
                lines.append(f"| {l['name']} | {a['kind']} | {a['words']} | {a['bits']} | {a.get('min_words', '-')} | "
                             f"{a.get('frame_bits', a['bits'])} |")
        if "fusion" in d:
            fused = [f"{b['producer']} → {b['consumer']} ({b['levels']} thresholds a channel)"
                     for b in d["fusion"] if b["fused"]]
            lines += ["", f"## Fused requantize-and-fire (--fuse {d['fuse']})", "",
                      "- fused: " + ("; ".join(fused) if fused else "none")]
            lines += [f"- not fused: {b['producer']} → {b['consumer']}: {b['reason']}" for b in d["fusion"] if not b["fused"]]
        if "zero_skip" in d:
            zs = d["zero_skip"]
            lines += ["", f"## Zero-word skipping (--zero-skip {zs['mode']})", ""]
            for l in d["layers"]:
                z = l.get("zero_skip")
                if z is not None and "window_words" in z:  # a conv engine: group 0 scans, the others replay
                    lines.append(f"- {l['name']}: scan of each window, then its nonzero words, planned at a "
                                 f"nonzero-word rate of {100 * z['nonzero_rate']:.0f}% ({z['expected_words_per_group']:g} "
                                 f"of {z['window_words']} window words per replayed output group, {z['groups']} groups)")
                elif z is not None:
                    lines.append(f"- {l['name']}: walk of nonzero words, planned at a nonzero-word rate of "
                                 f"{100 * z['nonzero_rate']:.0f}% ({z['expected_words_per_group']:g} of "
                                 f"{z['frame_words']} words per output group, {z['groups']} groups)")
            lines += [f"- dense: {name}: {why}" for name, why in zs["dense"].items()]
        synth = d.get("synthesis")
        if synth:
            lines += ["", f"## Synthesis ({synth['target']}, Yosys)", "", "| module | LUT | FF | BRAM | DSP |", "|---|---|---|---|---|"]
            for name, r in sorted(synth["modules"].items()):
                lines.append(f"| {name} | {r['lut']} | {r['ff']} | {r['bram']} | {r['dsp']} |")
            t = synth["total"]
            lines.append(f"| **total** | {t['lut']} | {t['ff']} | {t['bram']} | {t['dsp']} |")
        if d["taps"]:
            lines += ["", "## Debug taps", "", "| port | layer | kind | width | signed |", "|---|---|---|---|---|"]
            for t in d["taps"]:
                lines.append(f"| {t['port']} | {t['layer']} | {t['kind']} | {t['width']} | {t['signed']} |")
        return "\n".join(lines) + "\n"

    def write(self, out_dir: str | Path) -> None:
        out_dir = Path(out_dir)
        (out_dir / "report.json").write_text(self.json_text())
        (out_dir / "report.md").write_text(self.markdown())


def build_report(plan: Plan, verilog_files: list[str], taps: list[dict[str, Any]], debug_taps: bool) -> Report:
    m = plan.manifest
    data: dict[str, Any] = {
        "top": "bitspike_top",
        "manifest_name": m.name,
        "manifest_digest": m.digest(),
        "verilog_files": list(verilog_files),
        "input_bits": m.input.bits,
        "input_size": m.input.size,
        "input_shape": list(m.input.shape),
        "input_order": "flat" if len(m.input.shape) == 1 else "hwc",
        "num_classes": m.num_classes,
        "result_width": plan.result_width,
        "logit_width": plan.logit_width,
        "logit_signed": plan.ranges[m.layers[-1].name].out.signed,
        "cycles_per_inference": plan.cycles_per_inference,
        "initiation_interval": plan.initiation_interval,
        "layers": [lp.to_json() for lp in plan.layers],
        "weight_memory_bits": plan.weight_memory_bits,
        "weight_memory_bits_bound": plan.weight_memory_bits_bound,
        "taps": list(taps),
        "debug_taps": debug_taps,
        "fold": plan.fold,
        "max_luts": plan.max_luts,
        "estimated_luts": plan.estimated_luts,
    }
    if plan.options.fuse != "off":  # --fuse off writes the report of a generator without fusion, byte for byte
        data["fuse"] = plan.options.fuse
        data["fusion"] = [b.to_json() for b in plan.fusion]
    if plan.options.zero_skip != "off":  # --zero-skip off (the default) writes the report as before, byte for byte
        from .zeroskip import zero_skip_decisions

        decided = zero_skip_decisions(plan, plan.options.zero_skip)
        data["zero_skip"] = {"mode": plan.options.zero_skip,
                             "layers": [n.name for n in plan.layers if getattr(n, "zero_skip", False)],
                             "dense": {n.name: decided[n.name][1] for n in plan.layers
                                       if not getattr(n, "zero_skip", False) and n.engine}}
    return Report(data=data, plan=plan)


def _taps(layer: dict) -> str:
    """A multi-tap conv's taps per clock after its lanes (``1t9``: 9 taps of one lane); nothing otherwise."""
    return f"t{layer['taps']}" if "taps" in layer else ""
