"""The op registry and the plan IR (issue 12): one module per op, typed nodes, registered passes, one report reader.

* every op is registered with its layer class, and every manifest op has one;
* core modules never branch on a layer's kind (no ``op ==`` tests, no ``w_bits is None``, no
  isinstance on layer classes): they iterate the registry;
* ``make_plan`` gives each layer its op's own node type and runs the registered flow, the LUT
  estimate included (nothing is patched on afterwards);
* ``read_report`` reads what ``generate`` wrote, and names the file and key when something is missing;
* importing the manifest pulls in neither torch nor amaranth.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from bitspike.errors import HardwareError
from bitspike.gen.ir import FLOW, PASSES, PlanNode
from bitspike.gen.plan import make_plan
from bitspike.gen.report import read_report
from bitspike.ops.base import LAYER_KINDS, OPS
from bitspike.testing import random_cnn, random_mlp

ROOT = Path(__file__).resolve().parent.parent

#: modules that must iterate the registry instead of telling layer kinds apart
CORE = ["bitspike/manifest.py", "bitspike/analysis.py", "bitspike/ranges.py", "bitspike/ops/kernels.py",
        "bitspike/ops/hooks.py", "bitspike/ops/stream.py", "host/golden.py", "host/convert.py", "host/export.py",
        "host/agreement.py", "gen/plan.py", "gen/folding.py", "gen/timing.py", "gen/dsp.py", "gen/top.py", "gen/__init__.py",
        "gen/report.py", "gen/emit.py", "gen/interface.py", "gen/ir.py"]
KIND_TEST = re.compile(r"\.op\s*(==|!=|in\b)|w_bits is (not )?None|"
                       r"isinstance\([^)]*(Linear|Conv2d|MaxPool|AvgPool|Pool|Flatten|Add|Synaptic)Layer")


def test_every_op_is_registered_with_its_layer_class():
    assert set(OPS) == set(LAYER_KINDS) == {"linear", "conv2d", "maxpool", "avgpool", "flatten", "add"}
    for name, op in OPS.items():
        assert op.name == name and op.layer_cls.op == name and LAYER_KINDS[name] is op.layer_cls


@pytest.mark.parametrize("path", CORE)
def test_core_modules_do_not_branch_on_op_kind(path):
    text = (ROOT / path).read_text()
    hits = [line.strip() for line in text.splitlines() if KIND_TEST.search(line)]
    assert hits == [], f"{path} tells layer kinds apart: {hits}"


def test_plan_has_a_typed_node_per_op_and_runs_the_flow():
    assert set(FLOW) <= set(PASSES)
    m = random_cnn(3, image=(1, 8, 8), channels=(3, 4), residual=True)
    plan = make_plan(m, max_luts=20000, dsp_blocks=8)
    from bitspike.ops.add import AddNode
    from bitspike.ops.conv2d import Conv2dNode
    from bitspike.ops.flatten import FlattenNode
    from bitspike.ops.linear import LinearNode
    from bitspike.ops.pooling import PoolNode

    types = {"linear": LinearNode, "conv2d": Conv2dNode, "maxpool": PoolNode, "avgpool": PoolNode,
             "flatten": FlattenNode, "add": AddNode}
    for node, layer in zip(plan.layers, m.layers):
        assert type(node) is types[layer.op] and isinstance(node, PlanNode)
        assert node.luts == OPS[layer.op].estimate_luts(node)
        assert node.cycles == OPS[layer.op].busy_cycles(node)
    assert {l.op for l in m.layers} >= {"conv2d", "maxpool", "add", "flatten", "linear"}
    assert plan.estimated_luts == sum(n.luts for n in plan.layers) > 0
    assert plan.cycles_per_inference > 0 and plan.initiation_interval >= max(n.cycles for n in plan.layers)
    assert not any(hasattr(n, "w_bits") for n in plan.layers if n.op in ("maxpool", "flatten", "add"))


def test_read_report_gives_what_generate_wrote(tmp_path):
    from bitspike.gen import generate

    m = random_mlp(1, sizes=(12, 8, 5))
    report = generate(m, tmp_path / "gen", debug_taps=True)
    view = read_report(tmp_path / "gen")
    d = report.to_json()
    assert view.path == tmp_path / "gen" / "report.json"
    assert (view.top, list(view.verilog_files), view.input_size, view.num_classes, view.result_width) == \
        (d["top"], d["verilog_files"], d["input_size"], d["num_classes"], d["result_width"])
    assert view.cycles_per_inference == d["cycles_per_inference"] and view.logit_signed == d["logit_signed"]
    assert [t.port for t in view.taps] == [t["port"] for t in d["taps"]] and view.taps
    assert list(view.layers) == d["layers"] and view.synthesis is None
    assert all(p.exists() for p in view.verilog_paths)


def test_read_report_errors_name_the_file_and_key(tmp_path):
    with pytest.raises(HardwareError, match="not found"):
        read_report(tmp_path)
    (tmp_path / "report.json").write_text(json.dumps({"top": "bitspike_top"}))
    with pytest.raises(HardwareError, match=r"report\.json lacks the keys \['verilog_files'"):
        read_report(tmp_path)
    (tmp_path / "report.json").write_text("{not json")
    with pytest.raises(HardwareError, match="cannot read"):
        read_report(tmp_path / "report.json")
    doc = {"top": "t", "verilog_files": ["gone.v"], "input_bits": 8, "input_size": 4, "input_order": "flat",
           "num_classes": 2, "result_width": 9}
    (tmp_path / "report.json").write_text(json.dumps(doc))
    with pytest.raises(HardwareError, match="gone.v"):
        read_report(tmp_path)
    assert read_report(tmp_path, check_files=False).logit_width == 9  # an older report: the default


def test_manifest_import_pulls_in_neither_torch_nor_amaranth():
    code = ("import sys, bitspike.manifest, bitspike.analysis, bitspike.gen.ir; "
            "print(sorted(m for m in ('torch', 'amaranth') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    assert out.strip() == "[]"
