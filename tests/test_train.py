"""Tests of bitspike.host.train: metrics, determinism, uniform mode, the target window, resume after a kill, DDP."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from bitspike.errors import BitspikeError, CheckpointError
from bitspike.host.checkpoint import load_checkpoint
from bitspike.host.train import TrainConfig, model_from_checkpoint, parse_bits, train

CLI = [sys.executable, "-m", "bitspike.cli"]


def _cfg(tmp_path, name, **kw):
    base = dict(dataset="digits", arch="mlp", epochs=2, lr=0.1, out=str(tmp_path / name), progress=False, threads=1)
    base.update(kw)
    return TrainConfig(**base)


def test_short_run_writes_metrics_plots_and_checkpoint(tmp_path):
    result = train(_cfg(tmp_path, "a", epochs=3))
    metrics = json.loads((result.run_dir / "metrics.json").read_text())
    assert [e["epoch"] for e in metrics["epochs"]] == [1, 2, 3]
    last = metrics["epochs"][-1]
    assert 0.5 < last["test_accuracy"] <= 1
    assert [l["name"] for l in last["layers"]] == ["fc1", "fc2"]
    assert last["layers"][0] == {**last["layers"][0], "w_bits": 8, "s_bits": 8, "timesteps": 1, "fixed": True}
    assert {"w_bits", "s_bits", "timesteps"} <= set(last["layers"][1])
    assert (result.run_dir / "bits.png").stat().st_size > 1000 and (result.run_dir / "accuracy.png").is_file()
    model, cfg = model_from_checkpoint(load_checkpoint(result.run_dir))
    assert cfg.epochs == 3 and model.arch == "mlp"


def test_same_seed_same_result_and_uniform_mode(tmp_path):
    a = train(_cfg(tmp_path, "a", seed=3))
    b = train(_cfg(tmp_path, "b", seed=3))
    sa, sb = load_checkpoint(a.run_dir)["model"], load_checkpoint(b.run_dir)["model"]
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert a.history[-1]["test_accuracy"] == b.history[-1]["test_accuracy"]
    u = train(_cfg(tmp_path, "u", uniform=(3, 2, 2), hidden=(32, 16)))
    for record in u.history:
        layers = record["layers"]
        assert (layers[0]["w_bits"], layers[0]["s_bits"], layers[0]["timesteps"]) == (8, 8, 1)
        assert all((l["w_bits"], l["s_bits"], l["timesteps"]) == (3, 2, 2) for l in layers[1:])


def test_bits_land_in_target_window_and_are_frozen_at_the_end(tmp_path):
    r = train(_cfg(tmp_path, "t", epochs=6, freeze_epochs=2, target=(2, 2, 1), hidden=(32, 32)))
    avg = r.history[-1]["avg_bits"]
    assert abs(avg["w"] - 2) <= 0.2 and abs(avg["s"] - 2) <= 0.2 and abs(avg["t"] - 1) <= 0.1
    assert avg["w"] * avg["s"] * avg["t"] <= 4 + 1e-9
    frozen = [h for h in r.history if h["frozen"]]
    assert len(frozen) == 2 and frozen[0]["layers"] == frozen[1]["layers"]


def test_bad_options_get_clear_errors(tmp_path):
    with pytest.raises(BitspikeError, match="W/S/T"):
        parse_bits("2/2")
    assert parse_bits("2/2/1.5", integers=False) == (2, 2, 1.5)
    with pytest.raises(BitspikeError, match="integers"):
        parse_bits("2/2/1.5", "--uniform")
    with pytest.raises(BitspikeError, match="first_layer"):
        _cfg(tmp_path, "x", first_layer="sometimes")
    with pytest.raises(BitspikeError, match="unknown architecture"):
        _cfg(tmp_path, "x", arch="transformer")
    proc = subprocess.run(CLI + ["train", "--target", "2/x/1", "--out", str(tmp_path / "x")],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1 and "--target must be W/S/T" in proc.stderr


def test_corrupt_checkpoint_is_a_clear_error(tmp_path):
    r = train(_cfg(tmp_path, "c", epochs=1))
    ckpt = r.run_dir / "checkpoint.ckpt"
    data = ckpt.read_bytes()
    ckpt.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_checkpoint(ckpt)
    proc = subprocess.run(CLI + ["train", "--epochs", "2", "--out", str(r.run_dir), "--resume", "--quiet"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and "truncated or corrupt" in proc.stderr
    ckpt.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError):
        load_checkpoint(ckpt)


def test_killed_run_resumes_and_matches_an_uninterrupted_run(tmp_path):
    # killed after epoch 2: 8 epochs leave six to cut into (each takes far longer than the 40 ms to the kill)
    epochs = 8
    out = tmp_path / "k"
    args = CLI + ["train", "--dataset", "digits", "--epochs", str(epochs), "--threads", "1", "--quiet", "--out", str(out)]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    ckpt = out / "checkpoint.ckpt"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if ckpt.exists() and load_checkpoint(ckpt)["epoch"] >= 2:
            break
        time.sleep(0.01)
    time.sleep(0.03)  # into the middle of the next epoch
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    state = load_checkpoint(ckpt)  # whatever moment the kill hit, the checkpoint is whole
    assert 2 <= state["epoch"] < epochs, "the run was not killed mid-way"
    assert [h["epoch"] for h in state["history"]] == list(range(1, state["epoch"] + 1))
    resumed = subprocess.run(args + ["--resume"], capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    done = load_checkpoint(ckpt)
    assert done["epoch"] == epochs and [h["epoch"] for h in done["history"]] == list(range(1, epochs + 1))
    straight = subprocess.run(args[:-1] + [str(tmp_path / "s")], capture_output=True, text=True, timeout=300)
    assert straight.returncode == 0, straight.stderr
    ref = load_checkpoint(tmp_path / "s")
    assert all(torch.equal(done["model"][k], ref["model"][k]) for k in ref["model"]), "resume changed the result"


def test_ddp_two_gloo_processes(tmp_path):
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "bitspike.cli",
         "train", "--dataset", "digits", "--epochs", "3", "--threads", "1", "--quiet", "--device", "cpu",
         "--out", str(out), "--json", str(tmp_path / "ddp.json")],
        capture_output=True, text=True, timeout=300, env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((tmp_path / "ddp.json").read_text())
    assert summary["epochs"] == 3 and summary["test_accuracy"] > 0.7
    state = load_checkpoint(out)
    assert state["epoch"] == 3


def test_learning_first_layer_and_a_fractional_t_target(tmp_path):
    """--first-layer learn allocates the first layer's B_w and T (its input stays 8-bit); a target of
    1.5 timesteps has no uniform allocation inside its window, so the final per-layer T differ."""
    from bitspike.host.export import export_run

    r = train(_cfg(tmp_path, "f", epochs=4, freeze_epochs=2, hidden=(32, 16), first_layer="learn", target=(2, 2, 1.5)))
    last = r.history[-1]
    layers = last["layers"]
    assert [l["fixed"] for l in layers] == [False, False, False]
    assert layers[0]["s_bits"] == 8
    assert len({l["timesteps"] for l in layers}) > 1
    assert 1.35 - 1e-9 <= last["avg_bits"]["t"] <= 1.65 + 1e-9
    metrics = json.loads((r.run_dir / "metrics.json").read_text())
    keys = {"changes_learning", "changes_projection", "renewals_learning", "renewals_projection"}
    for record in metrics["epochs"]:
        assert set(record["renewal"]["gate"]) == {"weights", "spikes"}
        assert set(record["renewal"]["weights"]) == keys and set(record["renewal"]["spikes"]) == keys
        for kind in ("weights", "spikes"):
            c = record["renewal"][kind]
            assert c["renewals_learning"] <= c["changes_learning"] and c["renewals_projection"] <= c["changes_projection"]
            if not record["renewal"]["gate"][kind]:
                assert c["renewals_learning"] == c["renewals_projection"] == 0
    assert set(metrics["final"]["renewal"]) == {"weights", "spikes"}
    from bitspike.figures import bits_over_epochs

    png = bits_over_epochs(metrics["epochs"], tmp_path / "bits.png")
    assert png.read_bytes().startswith(b"\x89PNG") and png.stat().st_size > 5000
    manifest, summary = export_run(r.run_dir, tmp_path / "f.bsm")
    syn = manifest.synaptic_layers
    assert [(l.w_bits, l.s_bits, l.timesteps) for l in syn] == [(l["w_bits"], l["s_bits"], l["timesteps"]) for l in layers]
    assert summary["avg_bits"] == last["avg_bits"]
