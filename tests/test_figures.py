"""The figures are written as real PNG files from real data."""

import numpy as np

from bitspike.figures import accuracy_vs_bit_budget, resources_per_engine, spikes_per_layer
from bitspike.host.golden import GoldenModel
from bitspike.testing import random_cnn

PNG = b"\x89PNG\r\n\x1a\n"


def test_figures_are_png(tmp_path):
    m = random_cnn(3, residual=True, timesteps=[2])
    r = GoldenModel(m).run(np.random.default_rng(0).integers(0, 256, (8,) + m.input.shape), trace=True)
    paths = [
        spikes_per_layer(r.trace, tmp_path / "spk.png", m),
        resources_per_engine([{"name": "a", "resources": {"lut": 3, "ff": 2, "bram": 0, "dsp": 1}}], tmp_path / "res.png"),
        accuracy_vs_bit_budget([{"label": "x", "bit_budget": 4.0, "accuracy": 90.0, "kind": "adaptive"}], tmp_path / "acc.png"),
    ]
    for p in paths:
        data = p.read_bytes()
        assert data.startswith(PNG) and len(data) > 5000
