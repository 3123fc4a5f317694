"""The generation report: ``report.json`` (sorted keys, byte-identical for equal input) and ``report.md``."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .plan import Plan

__all__ = ["Report", "build_report"]


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
            "",
            "| # | layer | op | B_w | B_s | T | PEs | lanes | widths | memory bits | cycles |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for l in d["layers"]:
            widths = " ".join(f"{k}:{v}" for k, v in sorted(l["widths"].items()))
            lines.append(f"| {l['index']} | {l['name']} | {l['op']} | {l['w_bits'] or '-'} | {l['s_bits'] or '-'} | "
                         f"{l['timesteps'] or '-'} | {l['pes']} | {l['lanes']} | {widths} | {l['memory_bits']} | {l['cycles']} |")
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
    return Report(data=data, plan=plan)
