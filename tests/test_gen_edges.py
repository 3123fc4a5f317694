"""Legal manifests at the edges of the generator, through real Verilator co-simulation (issue 11).

* a residual ``add`` of a layer to itself (both operands one fork);
* packed spike beats of T·B_s ≥ 64 bits (up to 64 × 16 = 1024) through ``--trace``;
* pooling windows that leave rows and columns over (2×3 and 3×1 on odd maps): every tap,
  including the conv outputs no pool window reads, and the planner's cycle count exact;
* a layer that no later layer reads: the generator refuses it instead of building a design that hangs.

One small network carries several cases so that the default run builds only two designs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bitspike.errors import HardwareError
from bitspike.manifest import AvgPoolLayer, InputSpec, Manifest, MaxPoolLayer
from bitspike.testing import NetBuilder


def _pool(b: NetBuilder, cls, kernel: tuple[int, int]) -> str:
    c, h, w = b.shapes[b.last]
    kh, kw = kernel
    name = f"pool{len(b.layers)}"
    return b.append(cls(name=name, inputs=(b.last,), in_shape=(c, h, w), out_shape=(c, (h - kh) // kh + 1,
                                                                                    (w - kw) // kw + 1),
                        kernel=kernel, stride=kernel))


def self_add_net(seed: int = 1) -> Manifest:
    """conv → add(conv, conv) → maxpool 2×3 on 7×7 (row 6, column 6 left over) → flatten → linear with
    T = 5, B_s = 13 (65-bit spike beats) → linear with T = 64, B_s = 16 (1024-bit spike beats)."""
    b = NetBuilder(np.random.default_rng(seed), InputSpec(shape=(2, 7, 7), bits=8, scale=1 / 255))
    conv = b.synaptic("conv2d", 3, 8, 8, 1, 0, 2, 3, kernel=3, stride=1, padding=1)
    b.add(conv, conv, hi=(2**3) << 2)
    _pool(b, MaxPoolLayer, (2, 3))
    b.flatten()
    b.synaptic("linear", 5, 3, 3, 2, 2, 3, 13)
    b.synaptic("linear", 6, 2, 13, 5, 3, 2, 16)
    b.synaptic("linear", 3, 3, 16, 64, 2, None, None)
    return b.manifest("edges-self-add")


def pool31_net(seed: int = 2) -> Manifest:
    """12-bit, 3-channel, non-square input → conv → avgpool 3×1 on 7×5 (row 6 left over) → linear, T·B_s = 64."""
    b = NetBuilder(np.random.default_rng(seed), InputSpec(shape=(3, 7, 5), bits=12, scale=1 / 4095))
    b.synaptic("conv2d", 2, 8, 8, 1, 0, 2, 3, kernel=3, stride=1, padding=1)
    _pool(b, AvgPoolLayer, (3, 1))
    b.flatten()
    b.synaptic("linear", 4, 3, 16, 4, 3, None, None)
    return b.manifest("edges-pool31")


@pytest.fixture(scope="module", params=["self_add", "pool31"])
def edge(request, cosim_of):
    m = self_add_net() if request.param == "self_add" else pool31_net()
    return m, cosim_of(m)


def _images(m: Manifest, n: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).integers(0, 2**m.input.bits, size=(n, *m.input.shape))
    x[0] = 2**m.input.bits - 1
    return x


def test_edge_designs_are_bit_exact_at_every_tap(edge):
    from bitspike.host.golden import GoldenModel
    from bitspike.sim.diagnose import ManifestGoldenTaps, compare_all

    m, sim = edge
    x = _images(m, 6, 3)
    g = GoldenModel(m).run(x)
    res = sim.run(x, trace=True, processes=1, stall_in=0.2, stall_out=0.3, seed=4)
    np.testing.assert_array_equal(res.logits, g.logits.numpy())
    np.testing.assert_array_equal(res.classes, g.classes.numpy())
    ref = ManifestGoldenTaps(m, sim.design.taps)
    # every tap, the pooled-away rows included: the traced run clocks on until each tap showed all its values
    assert compare_all(res, ref.sequences(x), sim.design.taps, ref) == (6, None)
    spk = [t for t in sim.design.taps if t.kind == "spk"]
    assert max(t.width for t in spk) >= 64
    if m.name == "edges-self-add":
        assert max(t.width for t in spk) == 64 * 16
        last = m.layers[-1].name
        lt = GoldenModel(m).run(x[:1], trace=True).trace[last]
        np.testing.assert_array_equal(sim.layer_trace(res, 0)[last]["spk"], lt.s[:, 0].numpy().T)  # [elements, 64]


def test_edge_designs_take_the_predicted_cycles(edge):
    m, sim = edge
    x = _images(m, 3, 5)
    for i in range(3):  # each inference alone, from reset: what the planner predicts, to the cycle
        assert int(sim.run(x[i:i + 1], processes=1).cycles[0]) == sim.design.cycles_per_inference


def test_self_add_has_no_skew_fifo(tmp_path):
    """Both operands of add(c, c) come from one fork beat by beat: no FIFO, and no duplicate submodule."""
    from bitspike.gen import generate

    report = generate(self_add_net(), tmp_path)
    text = "".join(Path(tmp_path, f).read_text() for f in report.to_json()["verilog_files"])
    assert "fork_conv0" in text and "fifo_conv0" not in text


def test_self_add_with_another_reader_keeps_both_fifos(tmp_path):
    """add(c, c) plus a second reader of c: the add's two branches each get their own FIFO."""
    from bitspike.gen import generate

    b = NetBuilder(np.random.default_rng(7), InputSpec(shape=(1, 5, 5), bits=8, scale=1 / 255))
    conv = b.synaptic("conv2d", 2, 8, 8, 1, 0, 2, 3, kernel=3, stride=1, padding=1)
    added = b.add(conv, conv, hi=(2**3) << 2)
    b.synaptic("conv2d", 2, 3, 3, 2, 2, 2, 3, src=conv, kernel=3, stride=1, padding=1, signed_out=True)
    b.add(b.last, added, hi=(2**3) << 2)
    b.flatten()
    b.synaptic("linear", 3, 3, 3, 2, 2, None, None)
    m = b.manifest("self-add-shared")
    report = generate(m, tmp_path)
    text = "".join(Path(tmp_path, f).read_text() for f in report.to_json()["verilog_files"])
    assert "fifo_conv0_add1 " in text and "fifo_conv0_add1_b " in text


def test_unconsumed_layer_is_refused_by_the_generator(tmp_path):
    from bitspike.gen import generate
    from bitspike.gen.plan import make_plan

    b = NetBuilder(np.random.default_rng(3), InputSpec(shape=(6,), bits=8, scale=1 / 255))
    first = b.synaptic("linear", 4, 8, 8, 1, 0, 2, 3)
    b.synaptic("linear", 5, 3, 3, 2, 2, 2, 3, src=first)  # nothing reads this one
    b.synaptic("linear", 3, 3, 3, 2, 2, None, None, src=first)
    # constructed directly, past validation (which refuses it too): the generator must not rely on that
    m = Manifest(name="dangling", input=b.input, layers=tuple(b.layers))
    with pytest.raises(HardwareError, match=r"layer 1 'line1': no later layer reads its output"):
        make_plan(m)
    with pytest.raises(HardwareError, match="no later layer reads"):
        generate(m, tmp_path / "gen")
    assert not (tmp_path / "gen" / "report.json").exists()
