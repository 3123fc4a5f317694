"""NIR in and out (host/nir_io.py) against real snnTorch 1.0.0 networks and its exporter and importer.

Why exact equality is asserted for β = 0.9 float networks: the interpreter calls the same torch float32 kernels as
snnTorch (``F.linear``, ``F.conv2d``, ``F.avg_pool2d``, then per neuron ``β·v + I − reset·θ`` and ``v − θ > 0``,
in snnTorch's order) on the same tensors (the same batch, one thread, one process), and the parameters read back
are bit-identical to snnTorch's (asserted first, β included). Identical operations on identical inputs give
identical float32 results, so the spike counts are equal on every sample; no tolerance is involved.
"""

from __future__ import annotations

import nir
import numpy as np
import pytest
import torch
from snntorch import utils as snn_utils
from snntorch.import_nir import import_from_nir

from bitspike.errors import BitspikeError
from bitspike.host import snntorch_nets as S
from bitspike.host.data import load_dataset
from bitspike.host.nir_io import Neuron, NirError, read_nir, to_nir, write_nir
from bitspike.host.stepped import DenseStep, SteppedNeuron, dense_stack_run

T = 8


@pytest.fixture(autouse=True)
def _one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", "train"), load_dataset("digits", "test")


def _trained_mlp(digits, reset: str):
    train, _ = digits
    torch.set_num_threads(1)
    net = S.digits_mlp(hidden=32, reset=reset, seed=3)
    S.train_snntorch(net, train.images[:512], train.labels[:512], timesteps=T, epochs=2, seed=3)
    return net


@pytest.fixture(scope="module")
def mlp_subtract(digits):
    return _trained_mlp(digits, "subtract")


@pytest.fixture(scope="module")
def mlp_zero(digits):
    return _trained_mlp(digits, "zero")


def _x(images) -> torch.Tensor:
    return torch.as_tensor(np.asarray(images), dtype=torch.float32) / 255.0


def _same_parameters(net, fn):
    """The description holds snnTorch's own float32 weights, biases, β and θ, bit for bit."""
    linears = [m for m in net if isinstance(m, torch.nn.Linear)]
    leakies = [m for m in net if hasattr(m, "beta")]
    affines = [n for n in fn.nodes if type(n).__name__ == "Affine"]
    neurons = [n for n in fn.nodes if isinstance(n, Neuron)]
    assert len(affines) == len(linears) and len(neurons) == len(leakies)
    for lin, aff in zip(linears, affines):
        assert np.array_equal(aff.weight, lin.weight.detach().numpy())
        assert np.array_equal(aff.bias, lin.bias.detach().numpy())
    for lif, neu in zip(leakies, neurons):
        assert np.array_equal(neu.beta, lif.beta.detach().numpy())
        assert np.array_equal(neu.threshold, lif.threshold.detach().numpy())
        assert neu.gain is None


def test_snntorch_subtract_mlp_read_from_a_nir_file_gives_snntorchs_counts(digits, mlp_subtract, tmp_path):
    _, test = digits
    path = tmp_path / "mlp.nir"
    nir.write(path, S.export(mlp_subtract, (1, 8, 8)))
    fn = read_nir(path, source="snntorch")
    assert fn.reset == "subtract" and any("subtract" in a and "snntorch" in a for a in fn.assumptions)
    assert [type(n).__name__ for n in fn.nodes] == ["Flatten", "Affine", "Neuron", "Affine", "Neuron"]
    assert all(n.kind == "LIF" for n in fn.nodes if isinstance(n, Neuron))
    _same_parameters(mlp_subtract, fn)
    ref = S.snntorch_counts(mlp_subtract, test.images, T)
    ours = fn.counts(_x(test.images), T)
    assert len(test) == 360
    assert torch.equal(ours, ref)
    assert 0 < int(ref.sum()) < ref.numel() * T  # not all silent, not saturated


def test_zero_reset_is_a_different_network(digits, mlp_subtract):
    """Reading a subtract-trained network with NIR's own reset rule changes its outputs (measured in bench/nir.py)."""
    _, test = digits
    g = S.export(mlp_subtract, (1, 8, 8))
    assert read_nir(g).reset == "zero"  # NIR's rule when nothing is said
    ref = S.snntorch_counts(mlp_subtract, test.images, T)
    zero = read_nir(g, reset="zero").counts(_x(test.images), T)
    assert not torch.equal(zero, ref)


def test_snntorch_zero_reset_mlp_and_the_round_trip_back_into_snntorch(digits, mlp_zero):
    """snnTorch → NIR → ours → NIR → snnTorch: our graph is the exporter's, array for array, so it loads as the same net."""
    _, test = digits
    g = S.export(mlp_zero, (1, 8, 8))
    fn = read_nir(g, reset="zero")
    _same_parameters(mlp_zero, fn)
    ref = S.snntorch_counts(mlp_zero, test.images, T)
    assert torch.equal(fn.counts(_x(test.images), T), ref)
    assert len(torch.unique(ref)) > 3

    g2 = to_nir(fn)
    assert list(g2.nodes) == list(g.nodes) and sorted(g2.edges) == sorted(g.edges)
    for name, node in g.nodes.items():
        assert type(g2.nodes[name]) is type(node)
        for f in ("weight", "bias", "tau", "r", "v_leak", "v_threshold", "v_reset"):
            if hasattr(node, f):
                assert np.array_equal(np.asarray(getattr(g2.nodes[name], f)), np.asarray(getattr(node, f))), (name, f)

    def run(module):
        snn_utils.reset(module)
        counts = 0
        with torch.no_grad():
            for _ in range(T):
                out = module(_x(test.images))
                counts = counts + (out[0] if isinstance(out, tuple) else out)
        return counts

    assert torch.equal(run(import_from_nir(g2)), run(import_from_nir(g)))


def test_subtract_network_is_refused_by_the_writer_unless_marked(digits, mlp_subtract, tmp_path):
    _, test = digits
    fn = read_nir(S.export(mlp_subtract, (1, 8, 8)), source="snntorch")
    with pytest.raises(NirError, match="subtract"):
        to_nir(fn)
    path = write_nir(fn, tmp_path / "marked.nir", allow_subtract=True)
    back = read_nir(path)
    assert back.reset == "subtract" and any("recorded in the graph by bitspike" in a for a in back.assumptions)
    x = _x(test.images[:100])
    assert torch.equal(back.counts(x, T), fn.counts(x, T))


def _integer_if_mlp(reset: str, seed: int = 0):
    """snnTorch Leaky MLP with β = 1 and integer weights, biases and thresholds (an IF network)."""
    net = S.digits_mlp(hidden=40, beta=1.0, reset=reset, seed=seed)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in (net[1], net[3]):
            m.weight.copy_(torch.randint(-3, 6, m.weight.shape, generator=g).float())
            m.bias.copy_(torch.randint(-20, 21, m.bias.shape, generator=g).float())
        net[2].threshold.fill_(900.0)
        net[4].threshold.fill_(6.0)
    return net


def _integer_layers(fn, reset: str) -> list[DenseStep]:
    layers = []
    affines = [n for n in fn.nodes if type(n).__name__ == "Affine"]
    neurons = [n for n in fn.nodes if isinstance(n, Neuron)]
    for aff, neu in zip(affines, neurons):
        theta = np.unique(neu.threshold)
        assert neu.kind == "IF" and theta.size == 1 and float(theta[0]).is_integer()
        w, b = aff.weight.astype(np.int64), aff.bias.astype(np.int64)
        assert np.array_equal(w, aff.weight) and np.array_equal(b, aff.bias)
        layers.append(DenseStep(torch.from_numpy(w), torch.from_numpy(b), SteppedNeuron(int(theta[0]), reset=reset)))
    return layers


@pytest.mark.parametrize("reset", ["subtract", "zero"])
def test_if_network_from_snntorch_equals_the_integer_neuron_on_every_sample(digits, reset):
    """β = 1, integer parameters, raw pixels as input: snnTorch, our reader and the integer contract agree exactly.

    Bound: |current| ≤ 64·255·5 + 20 < 2^17 and |membrane| ≤ T·(2^17 + 900) < 2^21, so snnTorch's float32 is exact.
    """
    _, test = digits
    net = _integer_if_mlp(reset)
    fn = read_nir(S.export(net, (1, 8, 8)), source="snntorch", reset=reset)
    assert any("read as IF" in a for a in fn.assumptions)
    pixels = torch.as_tensor(test.images, dtype=torch.float32)  # pixel values, not /255: integer currents
    ref = S.snntorch_counts(net, test.images, T, pixel_scale=1.0)
    assert torch.equal(fn.counts(pixels, T), ref)
    spikes_in = torch.as_tensor(test.images.reshape(len(test), -1), dtype=torch.int64)[None].expand(T, -1, -1)
    assert torch.equal(dense_stack_run(_integer_layers(fn, reset), spikes_in), ref.to(torch.int64))
    assert len(torch.unique(ref)) > 3


def test_if_network_written_for_snntorch_loads_there_with_exact_counts(digits):
    """target='snntorch' writes β = 1 so that snnTorch's importer reads it as β = 1.0 (it cannot read τ = ∞)."""
    _, test = digits
    net = _integer_if_mlp("zero", seed=1)
    fn = read_nir(S.export(net, (1, 8, 8)), reset="zero")
    back = import_from_nir(to_nir(fn, target="snntorch"))
    snn_utils.reset(back)
    pixels = torch.as_tensor(test.images, dtype=torch.float32)
    counts = 0
    with torch.no_grad():
        for _ in range(T):
            counts = counts + back(pixels)[0]
    spikes_in = torch.as_tensor(test.images.reshape(len(test), -1), dtype=torch.int64)[None].expand(T, -1, -1)
    want = dense_stack_run(_integer_layers(fn, "zero"), spikes_in)
    assert torch.equal(counts.to(torch.int64), want)
    assert len(torch.unique(want)) > 3
    assert to_nir(fn).nodes["2"].__class__ is nir.IF  # the plain NIR form of the same neuron


def test_conv_network_from_snntorch():
    """Conv2d + AvgPool2d + Flatten + Linear, randomly initialised, on Fashion-MNIST images: snnTorch's counts."""
    images = load_dataset("fashion-mnist", "test").images[:96]
    net = S.fashion_cnn(channels=4, seed=5)
    with torch.no_grad():  # larger weights than the default initialisation, so that the output layer fires
        net[0].weight.mul_(2)
        net[4].weight.mul_(8)
    fn = read_nir(S.export(net, (1, 28, 28)), source="snntorch")
    assert [type(n).__name__ for n in fn.nodes] == ["Conv2d", "Neuron", "Pool2d", "Flatten", "Affine", "Neuron"]
    assert fn.shapes[0] == (4, 12, 12) and fn.shapes[2] == (4, 6, 6) and "2:avg->[4, 6, 6]" in repr(fn)
    ref = S.snntorch_counts(net, images, T)
    assert torch.equal(fn.run(_x(images), T).sum(0), ref)
    assert len(torch.unique(ref)) > 3
    g2 = to_nir(fn, allow_subtract=True)
    again = read_nir(g2)
    assert torch.equal(again.counts(_x(images), T), ref)


# ---------------------------------------------------------------------------------------------------------------
# what is refused


def _graph(*nodes, shape=(4,)):
    names = [f"n{i}" for i in range(len(nodes))]
    out_shape = shape
    g = {"input": nir.Input(input_type={"input": np.array(shape)}), **dict(zip(names, nodes))}
    g["output"] = nir.Output(output_type={"output": np.array(out_shape)})
    chain = ["input", *names, "output"]
    return nir.NIRGraph(nodes=g, edges=list(zip(chain, chain[1:])), type_check=False)


def _lif(n=4, **kw):
    args = dict(tau=np.full(n, 1e-3), r=np.full(n, 10.0), v_leak=np.zeros(n), v_threshold=np.ones(n),
                v_reset=np.zeros(n))  # fmt: skip
    args.update(kw)
    return nir.LIF(**args)


@pytest.mark.parametrize(
    "node,shape,match",
    [
        (nir.CubaLIF(tau_syn=np.ones(4), tau_mem=np.ones(4), r=np.ones(4), v_leak=np.zeros(4),
                     v_threshold=np.ones(4)), (4,), r"node 'n0' \(CubaLIF\).*synaptic current"),  # fmt: skip
        (_lif(v_leak=np.ones(4)), (4,), r"node 'n0' \(LIF\), field 'v_leak'"),
        (_lif(v_reset=np.full(4, 0.5)), (4,), r"field 'v_reset'"),
        (_lif(v_threshold=np.zeros(4)), (4,), r"field 'v_threshold'"),
        (_lif(tau=np.full(4, 1e-5)), (4,), r"field 'tau'.*negative leak"),
        (_lif(tau=np.full(4, np.inf)), (4,), r"field 'r'"),
        (_lif(n=3), (4,), r"field 'v_threshold'.*does not match"),
        (nir.Conv2d(input_shape=(6, 6), weight=np.ones((2, 1, 3, 3)), stride=1, padding=0, dilation=2, groups=1,
                    bias=np.zeros(2)), (1, 6, 6), r"\(Conv2d\), field 'dilation'"),  # fmt: skip
        (nir.AvgPool2d(kernel_size=np.array([2, 2]), stride=np.array([2, 2]), padding=np.array([1, 1])), (1, 6, 6),
         r"\(AvgPool2d\), field 'padding'"),  # fmt: skip
        (nir.Affine(weight=np.ones((3, 5)), bias=np.zeros(3)), (4,), r"\(Affine\), field 'weight'.*5 inputs"),
        (nir.Scale(scale=np.ones(4)), (4,), r"Scale is not supported"),
        (nir.Flatten(input_type={"input": np.array([2, 3, 4])}, start_dim=1, end_dim=-1), (2, 3, 4),
         r"\(Flatten\), field 'start_dim'"),  # fmt: skip
    ],
)
def test_unsupported_nodes_and_fields_are_named(node, shape, match):
    with pytest.raises(NirError, match=match):
        read_nir(_graph(node, shape=shape))


def test_graph_shape_errors(tmp_path):
    a = nir.Affine(weight=np.ones((4, 4)), bias=np.zeros(4))
    branch = nir.NIRGraph(
        nodes={"input": nir.Input(input_type={"input": np.array([4])}), "a": a, "b": _lif(), "c": _lif(),
               "output": nir.Output(output_type={"output": np.array([4])})},  # fmt: skip
        edges=[("input", "a"), ("a", "b"), ("a", "c"), ("b", "output"), ("c", "output")],
    )
    with pytest.raises(NirError, match=r"node 'a' \(Affine\).*2 outgoing edges"):
        read_nir(branch)
    bad = tmp_path / "not.nir"
    bad.write_bytes(b"hello")
    with pytest.raises(NirError, match="not a NIR graph"):
        read_nir(bad)
    with pytest.raises(NirError, match="no such file"):
        read_nir(tmp_path / "missing.nir")
    with pytest.raises(NirError, match="unknown source"):
        read_nir(_graph(_lif()), source="norse")
    with pytest.raises(NirError, match="unknown reset"):
        read_nir(_graph(_lif()), reset="soft")
    assert issubclass(NirError, BitspikeError)


def test_generic_lif_discretisation():
    """τ·dv/dt = −v + r·I, one Euler step of dt: β = 1 − dt/τ = 0.9 and gain dt·r/τ = 1 or 0.5 here."""
    fn = read_nir(_graph(_lif(tau=np.full(4, 1e-3), r=np.array([10.0, 10.0, 5.0, 5.0]))), dt=1e-4)
    (neu,) = fn.nodes
    assert np.allclose(neu.beta, 0.9) and neu.gain is not None and np.allclose(neu.gain, [1, 1, 0.5, 0.5])
    x = torch.full((1, 4), 0.3)
    # by hand: gain·I = 0.3, 0.3, 0.15, 0.15; v1 = 0.3 → v2 = 0.57 → v3 = 0.813 → v4 = 1.0317 > 1 → spike at t=3
    spikes = fn.run(x, 5)[:, 0]
    assert spikes[:, 0].tolist() == [0, 0, 0, 1, 0] and spikes[:, 2].sum() == 0
