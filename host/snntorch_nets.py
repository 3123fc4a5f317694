"""Small snnTorch networks for the NIR round trip: build, train on CPU, run, export.

These are the networks a user brings from snnTorch: ``Leaky`` neurons after
``Linear`` (digits MLP) or ``Conv2d`` + ``AvgPool2d`` (Fashion-MNIST),
trained with snnTorch's surrogate gradient on spike counts and written with
``snntorch.export_nir.export_to_nir``. Inputs are the pixels / 255, fed at
every step (direct encoding); the class is the output layer's spike count
argmax.

Two details the exporter needs (snnTorch 1.0.0): β and θ as per-neuron
tensors (a plain float fails with a type mismatch), and a sample input
without the batch axis, which is why the networks flatten with
``start_dim=-3`` (one sample is ``[C, H, W]`` with or without a batch axis).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import snntorch as snn
import torch
from snntorch import utils as snn_utils

from bitspike.errors import BitspikeError

__all__ = ["leaky", "digits_mlp", "fashion_cnn", "snntorch_counts", "train_snntorch", "TrainResult", "export"]


def leaky(shape: tuple[int, ...] | int, beta: float, threshold: float = 1.0, reset: str = "subtract",
          *, output: bool = False) -> snn.Leaky:  # fmt: skip
    """A ``snn.Leaky`` layer with per-neuron β and θ (the form ``export_to_nir`` accepts)."""
    shape = (shape,) if isinstance(shape, int) else tuple(shape)
    return snn.Leaky(
        beta=torch.full(shape, float(beta)), threshold=torch.full(shape, float(threshold)),
        reset_mechanism=reset, init_hidden=True, output=output,
    )  # fmt: skip


def digits_mlp(hidden: int = 64, beta: float = 0.9, threshold: float = 1.0, reset: str = "subtract",
               seed: int = 0) -> torch.nn.Sequential:  # fmt: skip
    """Flatten → Linear(64, hidden) → Leaky → Linear(hidden, 10) → Leaky, for 8×8 digits ``[1, 8, 8]``."""
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Flatten(start_dim=-3),
        torch.nn.Linear(64, hidden),
        leaky(hidden, beta, threshold, reset),
        torch.nn.Linear(hidden, 10),
        leaky(10, beta, threshold, reset, output=True),
    )


def fashion_cnn(channels: int = 8, beta: float = 0.9, threshold: float = 1.0, reset: str = "subtract",
                seed: int = 0) -> torch.nn.Sequential:  # fmt: skip
    """Conv(1→c, 5, stride 2) → Leaky → AvgPool 2 → Flatten → Linear(c·6·6, 10) → Leaky, for ``[1, 28, 28]``."""
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Conv2d(1, channels, 5, stride=2),
        leaky((channels, 12, 12), beta, threshold, reset),
        torch.nn.AvgPool2d(2),
        torch.nn.Flatten(start_dim=-3),
        torch.nn.Linear(channels * 6 * 6, 10),
        leaky(10, beta, threshold, reset, output=True),
    )


def integer_if_mlp(reset: str = "subtract", seed: int = 0) -> torch.nn.Sequential:
    """:func:`digits_mlp` with β = 1 and integer weights, biases and thresholds (no training): an IF network
    whose float run and bitspike's integer model must agree exactly (the import's exactness check)."""
    net = digits_mlp(beta=1.0, reset=reset, seed=seed)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for lin, bias in ((net[1], 20), (net[3], 2)):
            lin.weight.copy_(torch.randint(-3, 4, lin.weight.shape, generator=g).float())
            lin.bias.copy_(torch.randint(-bias, bias + 1, lin.bias.shape, generator=g).float())
        net[2].threshold.fill_(300.0)
        net[4].threshold.fill_(4.0)
    return net


def _run(net: torch.nn.Module, x: torch.Tensor, timesteps: int) -> torch.Tensor:
    snn_utils.reset(net)  # zero every Leaky's membrane (init_hidden keeps it inside the module)
    counts = None
    for _ in range(timesteps):
        out = net(x)
        spk = out[0] if isinstance(out, tuple) else out
        counts = spk if counts is None else counts + spk
    return counts


def snntorch_counts(net: torch.nn.Module, images: np.ndarray | torch.Tensor, timesteps: int, *,
                    pixel_scale: float = 255.0) -> torch.Tensor:  # fmt: skip
    """The output layer's spike counts ``[N, classes]`` (float32) for ``uint8`` images fed as pixels / ``pixel_scale``."""
    x = torch.as_tensor(np.asarray(images), dtype=torch.float32) / pixel_scale
    with torch.no_grad():
        return _run(net, x, timesteps)


@dataclass(frozen=True)
class TrainResult:
    """What :func:`train_snntorch` did: epochs run, seconds, and the final training loss."""

    epochs: int
    seconds: float
    loss: float


def train_snntorch(net: torch.nn.Module, images: np.ndarray, labels: np.ndarray, *, timesteps: int = 8,
                   epochs: int = 15, batch: int = 128, lr: float = 5e-3, seed: int = 0,
                   threads: int | None = None) -> TrainResult:  # fmt: skip
    """Train with snnTorch's surrogate gradient: cross-entropy on the output spike counts, Adam.

    Deterministic for a given seed and thread count (shuffling from ``seed``, CPU kernels): torch's float
    sums group by thread, so ``threads`` (torch's CPU threads for this call, restored after; ``None``: as
    set) pins the weights across machines.
    """
    if threads is not None:
        before = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            return train_snntorch(net, images, labels, timesteps=timesteps, epochs=epochs, batch=batch, lr=lr,
                                  seed=seed)
        finally:
            torch.set_num_threads(before)
    if len(images) != len(labels) or len(images) == 0:
        raise BitspikeError(f"training needs as many labels as images, got {len(images)} and {len(labels)}")
    x_all = torch.as_tensor(np.asarray(images), dtype=torch.float32) / 255.0
    y_all = torch.as_tensor(np.asarray(labels), dtype=torch.int64)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(seed)
    start, loss_value = time.perf_counter(), float("nan")
    net.train()
    for _ in range(epochs):
        order = torch.randperm(len(y_all), generator=gen)
        for i in range(0, len(order), batch):
            idx = order[i : i + batch]
            counts = _run(net, x_all[idx], timesteps)
            loss = torch.nn.functional.cross_entropy(counts, y_all[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            loss_value = loss.item()
    net.eval()
    return TrainResult(epochs, time.perf_counter() - start, loss_value)


def export(net: torch.nn.Module, sample_shape: tuple[int, ...]):
    """``snntorch.export_nir.export_to_nir`` with a zero sample of one image's shape (no batch axis)."""
    import warnings

    from snntorch.export_nir import export_to_nir

    with warnings.catch_warnings():
        # β = 1 exports as τ = dt / 0: numpy warns, the graph holds τ = r = inf, which read_nir expects
        warnings.filterwarnings("ignore", message="divide by zero", category=RuntimeWarning)
        # snnTorch 1.0.0's exporter still calls nirtorch's older tracer; the warning is for snnTorch, not the user
        warnings.filterwarnings("ignore", message="nirtorch.extract_nir_graph is being deprecated")
        return export_to_nir(net, torch.zeros(sample_shape))
