"""Shallow, wide weight memories as LUT ROMs in device plans, and skew FIFOs sized by the cycle model.

Both are what a wide fold of a residual CNN (ResNet20 on the ECP5-85F, bench/resnet.py) needs: a
16 × 16 fold of a 3 × 3 conv of 16 channels has 512-bit weight words 9 deep, which block RAM holds
only as 15 DP16KD; and the skew FIFOs of two whole feature maps each were the bulk of the top's
Verilog and of its block RAMs.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from bitspike.gen import generate
from bitspike.gen.boards import device_budget, get_board
from bitspike.gen.folding import estimate_resources, memory_blocks
from bitspike.gen.plan import make_plan
from bitspike.gen.timing import SKEW_SLACK, skew_fifo_depth, skew_fifos, stream_times
from bitspike.ops.base import OPS
from bitspike.rtl_templates.synapse import weight_memory_style, weight_rom_luts
from bitspike.testing import random_cnn


def _wide_conv_net(seed: int = 0):
    """conv 3×3 (4 → 16 channels, 8-bit weights) → flatten → linear, on 4 × 5 × 5."""
    from bitspike.manifest import InputSpec
    from bitspike.testing import NetBuilder

    b = NetBuilder(np.random.default_rng(seed), InputSpec(shape=(4, 5, 5), bits=8, scale=1 / 255))
    b.synaptic("conv2d", 16, 8, 8, 1, 0, 2, 3, kernel=3, stride=1, padding=1)
    b.flatten()
    b.synaptic("linear", 3, 2, 2, 1, 2, None, None)
    return b.manifest(f"wide-conv-{seed}")


def test_weight_memory_style():
    # 9 × 512 (a 16 × 16 fold of a 3×3 conv of 16 channels, 2-bit weights): 512 LUT4s against 15 DP16KD
    assert weight_rom_luts(9, 512) == 512
    assert weight_memory_style(9, 512, rom=True) == "logic"
    assert weight_memory_style(9, 512) == "block"  # not asked for: the default designs keep block RAM
    assert weight_memory_style(144, 512, rom=True) == "block"  # deeper than 64 words
    assert weight_memory_style(64, 36, rom=True) == "block"  # one block, cheaper than 144 LUT4s
    assert weight_memory_style(8, 64, rom=True) == "rom"  # under 1,024 bits: small, unmarked, as before


def test_device_plan_builds_shallow_wide_weights_as_luts_bit_exact(tmp_path):
    from bitspike.host.golden import GoldenModel
    from bitspike.sim.cosim import CoSim
    from bitspike.sim.diagnose import ManifestGoldenTaps, compare_all

    m = _wide_conv_net()
    dev = device_budget(get_board("ulx3s_85f"))
    plain = make_plan(m, fold="conv0=16x4,line1=1x1")
    rom = make_plan(m, fold="conv0=16x4,line1=1x1", device=dev)
    a, b = plain.layers[0], rom.layers[0]
    assert (a.weight_rom, b.weight_rom) == (False, True)
    # the 9 × 512 weight memory: block RAM without the device, a LUT ROM in its LUT estimate with it
    assert OPS["conv2d"].memories(a)[0] == (9, 512, "block") and OPS["conv2d"].memories(b)[0] == (9, 512, "rom")
    assert memory_blocks(9, 512, "block", "ecp5") == 15
    assert OPS["conv2d"].estimate_luts(b) - OPS["conv2d"].estimate_luts(a) == 256  # 512 LUT4s, 2 a unit
    est = estimate_resources(rom, "ecp5")
    assert est["layers"]["conv0"]["bram"] == estimate_resources(plain, "ecp5")["layers"]["conv0"]["bram"] - 15

    report = generate(m, tmp_path / "gen", fold="conv0=16x4,line1=1x1", device=dev, debug_taps=True)
    conv = (tmp_path / "gen" / f"{b.engine}.v").read_text()
    assert re.search(r'ram_style = "logic"', conv) and 'ram_style = "block"' not in conv
    assert report.to_json()["layers"][0]["weight_rom"] is True
    # the same integers as the golden model at every tap, under stalls on both streams
    sim = CoSim(tmp_path / "gen", "verilator", cache_dir=tmp_path / "vl")
    sim.build()
    x = np.random.default_rng(1).integers(0, 256, size=(3, *m.input.shape))
    x[0] = 255
    res = sim.run(x, trace=True, processes=1, stall_in=0.2, stall_out=0.3, seed=1)
    np.testing.assert_array_equal(res.logits, GoldenModel(m).run(x).logits.numpy())
    ref = ManifestGoldenTaps(m, sim.design.taps)
    assert compare_all(res, ref.sequences(x), sim.design.taps, ref) == (3, None)


def test_skew_fifo_is_as_deep_as_the_cycle_model_needs(tmp_path):
    m = random_cnn(3, image=(1, 8, 8), channels=(3, 4), residual=True)
    plan = make_plan(m)
    fifos = skew_fifos(plan)
    assert len(fifos) == 1
    src, join, depth, _ = fifos[0]
    assert depth == skew_fifo_depth(plan, src, join, stream_times(plan))
    elems = int(np.prod([l for l in m.layers if l.name == join][0].in_shape))
    assert SKEW_SLACK < depth < 2 * elems + 16  # the generator used to keep two whole feature maps
    generate(m, tmp_path, fuse="off")
    top = (tmp_path / "bitspike_top.v").read_text()
    words = re.findall(r"reg \[\d+:0\] storage \[(\d+):0\]", top)
    assert [int(w) + 1 for w in words] == [depth - 1]  # SyncFIFOBuffered: the output register holds one beat
    # a device plan counts the skew FIFOs' block RAMs (here none: a small RAM goes to LUT RAM)
    dev = device_budget(get_board("ulx3s_85f"))
    est = estimate_resources(make_plan(m, device=dev), "ecp5")
    assert est["skew_fifo_bram"] == 0


def test_files_of_a_residual_design_are_small(tmp_path):
    # the top of a residual design on 4 × 16 × 16: its skew FIFO once held two whole feature maps of
    # zero-initialised words (2,064 lines of `storage[i] = …`, a 71 KB top), now the model's 93 beats (21 KB)
    m = random_cnn(3, image=(4, 16, 16), channels=(4, 4), residual=True)
    generate(m, tmp_path, fuse="off")
    assert Path(tmp_path, "bitspike_top.v").stat().st_size < 40_000


def test_projection_join_gets_a_skew_fifo_on_its_second_operand(tmp_path):
    """add(conv(conv(x)), conv1x1(x)): the projection is not a fork branch, but it runs ahead of the other
    operand and its engine holds few beats; it gets the FIFO the cycle model takes it through."""
    from bitspike.host.golden import GoldenModel
    from bitspike.manifest import InputSpec
    from bitspike.sim.cosim import CoSim
    from bitspike.testing import NetBuilder

    b = NetBuilder(np.random.default_rng(5), InputSpec(shape=(2, 8, 8), bits=8, scale=1 / 255))
    x = b.synaptic("conv2d", 4, 8, 8, 1, 0, 2, 3, kernel=3, stride=1, padding=1)
    main = b.synaptic("conv2d", 4, 2, 3, 1, 2, 2, 3, kernel=3, stride=2, padding=1)
    main = b.synaptic("conv2d", 4, 2, 3, 1, 2, 2, 3, kernel=3, stride=1, padding=1, signed_out=True)
    proj = b.synaptic("conv2d", 4, 2, 3, 1, 2, 2, 3, src=x, kernel=1, stride=2, padding=0, signed_out=True)
    b.add(main, proj, hi=(2**3) << 2)
    b.flatten()
    b.synaptic("linear", 3, 2, 3, 1, 2, None, None)
    m = b.manifest("projection")
    plan = make_plan(m)
    names = [(s, j) for s, j, _, _ in skew_fifos(plan)]
    join = m.layers[-3].name
    assert (proj, join) in names and (main, join) not in names
    generate(m, tmp_path / "gen", debug_taps=True)
    assert f"fifo_{proj}_{join} " in (tmp_path / "gen" / "bitspike_top.v").read_text()
    sim = CoSim(tmp_path / "gen", "verilator", cache_dir=tmp_path / "vl")
    sim.build()
    imgs = np.random.default_rng(2).integers(0, 256, size=(3, *m.input.shape))
    res = sim.run(imgs, processes=1, stall_in=0.3, stall_out=0.5, seed=2)
    np.testing.assert_array_equal(res.logits, GoldenModel(m).run(imgs).logits.numpy())
    assert int(sim.run(imgs[:1], processes=1).cycles[0]) == sim.design.cycles_per_inference
