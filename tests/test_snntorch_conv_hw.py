"""A snnTorch conv network through NIR into hardware: export_to_nir → import → gen → co-simulation, bit-exact.

The small cousin of the benchmark's Fashion-MNIST network (bench/stepped_hw.py --fashion): Conv(1→2, 3) →
``Leaky`` → AvgPool 2 → Flatten → Linear(18, 10) → ``Leaky`` on 8×8 digits, snnTorch's own initialisation
(no training: the test is about the integers, not the accuracy). The import gives a conv engine on the pixels
(T = 1) feeding a stepped layer of 72 inputs whose weights carry the folded average pool, and a stepped readout.
Icarus Verilog in the default run (no C++ build); every debug tap — the conv's accumulators and currents, each
stepped neuron's spike at every step, the stepped layers' accumulators and outputs — must equal the golden
model's, under random stalls on both streams.
"""

from __future__ import annotations

import torch

from bitspike.gen.plan import make_plan
from bitspike.host import snntorch_nets as S
from bitspike.host.data import images_for_manifest, load_dataset
from bitspike.host.golden import GoldenModel
from bitspike.host.nir_import import import_network
from bitspike.host.nir_io import read_nir
from bitspike.ops.neuron import SteppedNode

T = 4


def _tiny_cnn(seed: int = 1) -> torch.nn.Sequential:
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Conv2d(1, 2, 3),
        S.leaky((2, 6, 6), 0.9),
        torch.nn.AvgPool2d(2),
        torch.nn.Flatten(start_dim=-3),
        torch.nn.Linear(2 * 3 * 3, 10),
        S.leaky(10, 0.9, output=True),
    )


def test_an_imported_snntorch_conv_network_is_bit_exact_at_every_tap(cosim_of):
    from bitspike.sim.diagnose import ManifestGoldenTaps, compare_all

    net = _tiny_cnn()
    manifest, _ = import_network(read_nir(S.export(net, (1, 8, 8)), source="snntorch"), timesteps=T)
    assert [l.op for l in manifest.layers] == ["conv2d", "flatten", "linear", "linear"]
    n4 = manifest.layers[2]
    assert n4.weight.shape == (10, 72) and n4.stepped.mode == "stepped"  # the pool folded: 72 stepped inputs
    x = images_for_manifest(load_dataset("digits", "test").images[:4], manifest)
    golden = GoldenModel(manifest).run(x, trace=True)
    s = golden.trace[n4.name].s
    assert 0 < int((s != 0).sum()) < s.numel()  # the conv's neurons spike, not all of them at every step
    assert sum(isinstance(n, SteppedNode) for n in make_plan(manifest).layers) == 2
    sim = cosim_of(manifest, "icarus")
    res = sim.run(x, trace=True, processes=1, stall_in=0.2, stall_out=0.3, seed=4)
    assert (res.logits == golden.logits.numpy()).all()
    ref = ManifestGoldenTaps(manifest, sim.design.taps)
    assert compare_all(res, ref.sequences(x), sim.design.taps, ref) == (len(x), None)


def test_a_board_plan_counts_the_stepped_engines_memories():
    """The board-filling fold prices every engine's memories and registers (a stepped engine's included: its
    block RAM count once failed on the squeezed engine's fields)."""
    from bitspike.gen.boards import device_budget
    from bitspike.gen.folding import estimate_brams, estimate_resources
    from bitspike.ops.base import OPS

    manifest, _ = import_network(read_nir(S.export(_tiny_cnn(), (1, 8, 8)), source="snntorch"), timesteps=T)
    device = device_budget("icebreaker")
    plan = make_plan(manifest, device=device)
    est = estimate_resources(plan, device.family)
    stepped = [n for n in plan.layers if isinstance(n, SteppedNode)]
    assert len(stepped) == 2
    for node in stepped:
        # weights, membranes, two event banks; two current banks for a constant input, a carry for the last layer
        mems = OPS[node.op].memories(node)
        assert mems[1][0] == node.in_features and mems[2][0] == 2 * node.in_features
        assert len(mems) == 3 + (not node.per_step_input) + (not node.requantized)
        assert est["layers"][node.name]["bram"] == estimate_brams(node, device.family)
        assert est["layers"][node.name]["ff"] == OPS[node.op].estimate_ffs(node) > 0
