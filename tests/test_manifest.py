"""The manifest: round trips, determinism, and every kind of bad file rejected with a precise message."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.numpy import save

from bitspike import manifest as M
from bitspike.errors import ManifestError
from bitspike.testing import random_cnn, random_mlp


def raw_bytes(meta: dict, tensors: dict[str, np.ndarray]) -> bytes:
    return save(tensors, metadata={M.METADATA_KEY: json.dumps(meta)})


@pytest.fixture
def mlp() -> M.Manifest:
    return random_mlp(7, sizes=(16, 12, 5), w_bits=[3], s_bits=[2], timesteps=[2])


def parts(m: M.Manifest) -> tuple[dict, dict]:
    return json.loads(json.dumps(m.metadata())), {k: v.copy() for k, v in m.tensors().items()}


def test_save_load_round_trip_is_identical(tmp_path, mlp):
    path = mlp.save(tmp_path / "m.bsm")
    again = M.load(path)
    assert again == mlp
    assert again.to_bytes() == path.read_bytes()
    assert again.digest() == mlp.digest()
    # a second save of the same manifest gives byte-identical files
    assert mlp.save(tmp_path / "m2.bsm").read_bytes() == path.read_bytes()


def test_manifest_fields_survive(mlp):
    again = M.loads(mlp.to_bytes())
    l0, l1 = again.layers
    assert (l0.w_bits, l0.s_bits, l0.timesteps, l0.k) == (8, 8, 1, 0)
    assert (l1.w_bits, l1.s_bits, l1.timesteps) == (3, 2, 2)
    assert l1.requant is None and l0.requant is not None
    assert again.num_classes == 5
    np.testing.assert_array_equal(l0.weight, mlp.layers[0].weight)


def test_cnn_with_residual_round_trip():
    m = random_cnn(11, residual=True, pool="avgpool")
    assert M.loads(m.to_bytes()) == m
    assert [l.op for l in m.layers] == ["conv2d", "conv2d", "add", "avgpool", "conv2d", "avgpool", "flatten", "linear"]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**31 - 1),
    kind=st.sampled_from(["mlp", "cnn", "res"]),
    wb=st.lists(st.integers(1, 8), min_size=1, max_size=3),
    sb=st.lists(st.integers(1, 8), min_size=1, max_size=3),
    tt=st.lists(st.integers(1, 8), min_size=1, max_size=3),
)
def test_hypothesis_manifests_round_trip(seed, kind, wb, sb, tt):
    if kind == "mlp":
        m = random_mlp(seed, sizes=(12, 9, 7, 4), w_bits=wb, s_bits=sb, timesteps=tt)
    else:
        m = random_cnn(seed, image=(2, 6, 6), channels=(3, 4), classes=4, w_bits=wb, s_bits=sb, timesteps=tt,
                       pool="maxpool" if seed % 2 else "avgpool", residual=kind == "res")
    data = m.to_bytes()
    again = M.loads(data)
    assert again == m
    assert again.to_bytes() == data


# ---------------------------------------------------------------------------------------------
# bad manifests: each is rejected, naming the layer and the field


def _set(meta, index, key, value):
    meta["layers"][index][key] = value


BAD_CASES = {
    "weight shape": (
        lambda meta, t: t.__setitem__("line1.weight", np.ones((5, 11), np.int64)),
        ["layer 1 'line1'", "line1.weight", "weight has 11 inputs but the layer's input has 12 features"],
    ),
    "w_bits too large": (lambda meta, t: _set(meta, 1, "w_bits", 17), ["layer 1 'line1'", "'w_bits'", "17 is out of range, expected 1 … 16"]),
    "w_bits zero": (lambda meta, t: _set(meta, 1, "w_bits", 0), ["layer 1 'line1'", "'w_bits'", "0 is out of range"]),
    "s_bits out of range": (lambda meta, t: _set(meta, 0, "s_bits", 40), ["layer 0 'line0'", "'s_bits'", "40 is out of range"]),
    "timesteps out of range": (lambda meta, t: _set(meta, 1, "timesteps", 0), ["layer 1 'line1'", "'timesteps'", "expected 1 … 64"]),
    "k not an integer": (lambda meta, t: _set(meta, 1, "k", 2.5), ["layer 1 'line1'", "'k'", "expected an integer, got 2.5"]),
    "weight does not fit B_w": (
        lambda meta, t: t["line1.weight"].__setitem__((2, 3), 4),
        ["layer 1 'line1'", "line1.weight", "value 4 at [2, 3] is above 3", "B_w = 3 allows"],
    ),
    "one-bit weight zero": (
        lambda meta, t: (_set(meta, 1, "w_bits", 1), t.__setitem__("line1.weight", np.ones((5, 12), np.int64) * np.array([1, 0] * 6))),
        ["layer 1 'line1'", "B_w = 1 weights must be −1 or +1"],
    ),
    "missing field": (lambda meta, t: meta["layers"][1].pop("s_bits"), ["layer 1 'line1'", "'s_bits'", "missing"]),
    "missing tensor": (lambda meta, t: t.pop("line0.rq_mult"), ["layer 0 'line0'", "line0.rq_mult", "tensor missing"]),
    "unknown version": (lambda meta, t: meta.__setitem__("version", 99), ["'version'", "unknown manifest version 99"]),
    "not a bitspike manifest": (lambda meta, t: meta.__setitem__("format", "onnx"), ["'format'", "not a bitspike manifest"]),
    "unknown op": (lambda meta, t: _set(meta, 1, "op", "lstm"), ["layer 1 'line1'", "'op'", "unknown operation 'lstm'"]),
    "declared out_shape wrong": (lambda meta, t: _set(meta, 0, "out_shape", [13]), ["layer 0 'line0'", "'out_shape'", "declared [13]"]),
    "in_shape wrong": (lambda meta, t: _set(meta, 1, "in_shape", [10]), ["layer 1 'line1'", "'in_shape'", "declared [10]"]),
    "forward reference": (lambda meta, t: _set(meta, 0, "inputs", ["line1"]), ["layer 0 'line0'", "'inputs'", "not the network input or an earlier layer"]),
    "duplicate name": (lambda meta, t: _set(meta, 1, "name", "line0"), ["layer 1 'line0'", "'name'", "used twice"]),
    "requant missing in middle": (
        lambda meta, t: (_set(meta, 0, "requant", None), t.pop("line0.rq_mult"), t.pop("line0.rq_bias")),
        ["layer 0 'line0'", "'requant'", "only the last layer may have requant = null"],
    ),
    "clamp bounds reversed": (
        lambda meta, t: meta["layers"][0]["requant"].update(lo=10, hi=5),
        ["layer 0 'line0'", "'requant'", "lo = 10 > hi = 5"],
    ),
    "float tensor": (
        lambda meta, t: t.__setitem__("line1.bias", t["line1.bias"].astype(np.float32)),
        ["layer 1 'line1'", "line1.bias", "expected an integer tensor, got dtype float32"],
    ),
    "unused tensor": (lambda meta, t: t.__setitem__("ghost.weight", np.zeros(3, np.int64)), ["'tensors'", "ghost.weight"]),
    "input bits": (lambda meta, t: meta["input"].__setitem__("bits", 0), ["input", "'bits'", "0 is out of range"]),
    "input scale": (lambda meta, t: meta["input"].__setitem__("scale", -1), ["input", "'scale'", "positive finite"]),
    "shift out of range": (lambda meta, t: meta["layers"][0]["requant"].update(shift=80), ["layer 0 'line0'", "'shift'", "80 is out of range"]),
    # issue 11: malformed kinds that used to validate
    "uint64 tensor": (
        lambda meta, t: t.__setitem__("line1.bias", np.full(5, 2**64 - 1, np.uint64)),
        ["layer 1 'line1'", "line1.bias", "dtype uint64", "int64"],
    ),
    "bool tensor": (
        lambda meta, t: t.__setitem__("line1.bias", np.ones(5, bool)),
        ["layer 1 'line1'", "line1.bias", "expected an integer tensor, got dtype bool"],
    ),
    "version float": (lambda meta, t: meta.__setitem__("version", 1.0), ["'version'", "unknown manifest version 1.0"]),
    "version true": (lambda meta, t: meta.__setitem__("version", True), ["'version'", "unknown manifest version True"]),
    "version string": (lambda meta, t: meta.__setitem__("version", "1"), ["'version'", "unknown manifest version '1'"]),
    "layer without inputs": (lambda meta, t: meta["layers"][1].pop("inputs"), ["layer 1 'line1'", "'inputs'", "missing"]),
    "inputs not a list": (lambda meta, t: _set(meta, 1, "inputs", "line0"), ["layer 1 'line1'", "'inputs'", "takes a list of 1"]),
    "huge input map": (
        lambda meta, t: meta["input"].__setitem__("shape", [1, 2**24, 2**24]),
        ["input", "'shape'", "16777216 is out of range, expected 1 … 65536"],
    ),
    "input map over the element limit": (
        lambda meta, t: meta["input"].__setitem__("shape", [1, 4096, 4096]),
        ["input", "'shape'", "16,777,216 elements; at most 1,048,576 per feature map"],
    ),
    "four-dimensional shape": (lambda meta, t: _set(meta, 0, "out_shape", [1, 1, 1, 12]), ["layer 0 'line0'", "'out_shape'", "1 to 3"]),
    "300-character name": (
        lambda meta, t: (_set(meta, 1, "name", "n" * 300), _rename_tensors(t, "line1", "n" * 300)),
        ["layer 1", "'name'", "1 to 64 ASCII letters", "file names"],
    ),
    "name with a slash": (lambda meta, t: _set(meta, 1, "name", "a/b"), ["layer 1", "'name'", "got 'a/b'"]),
    "name with a space": (lambda meta, t: _set(meta, 1, "name", "fc 1"), ["layer 1", "'name'", "got 'fc 1'"]),
    "name starting with a digit": (lambda meta, t: _set(meta, 1, "name", "1fc"), ["layer 1", "'name'", "not starting with a digit"]),
    "name not a string": (lambda meta, t: _set(meta, 1, "name", 7), ["layer 1", "'name'", "got 7"]),
    "names differ only in case": (
        lambda meta, t: (_set(meta, 1, "name", "LINE0"), _rename_tensors(t, "line1", "LINE0")),
        ["layer 1 'LINE0'", "'name'", "only in case"],
    ),
    "network name not printable": (lambda meta, t: meta.__setitem__("name", "a\nb"), ["'name'", "printable string"]),
    "unknown layer field": (lambda meta, t: _set(meta, 1, "paddding", [1, 1]), ["layer 1 'line1'", "'paddding'", "unknown field for a linear layer"]),
    "unknown requant field": (
        lambda meta, t: meta["layers"][0]["requant"].update(shfit=3),
        ["layer 0 'line0'", "'shfit'", "unknown field for requant"],
    ),
    "unknown top-level field": (lambda meta, t: meta.__setitem__("layer", []), ["'layer'", "unknown field for the manifest"]),
    "unknown input field": (lambda meta, t: meta["input"].__setitem__("bit", 8), ["input", "'bit'", "unknown field for the input"]),
    "layer nobody consumes": (
        lambda meta, t: meta["layers"].insert(1, {"name": "dangling", "op": "flatten", "inputs": ["line0"], "in_shape": [12], "out_shape": [12]}),
        ["layer 1 'dangling'", "'inputs'", "no later layer takes this layer's output"],
    ),
    "last layer is not synaptic": (
        lambda meta, t: meta["layers"].append({"name": "tail", "op": "flatten", "inputs": ["line1"], "in_shape": [5], "out_shape": [5]}),
        ["layer 2 'tail'", "'requant'", "the last layer must be"],
    ),
    "weight memory over the limit": (
        lambda meta, t: (
            meta["input"].__setitem__("shape", [2048]), _set(meta, 0, "in_shape", [2048]), _set(meta, 0, "out_shape", [512]),
            _set(meta, 1, "in_shape", [512]), _set(meta, 0, "w_bits", 8),
            t.update({"line0.weight": np.zeros((512, 2048), np.int8), "line0.bias": np.zeros(512, np.int64),
                      "line0.rq_mult": np.ones(512, np.int64), "line0.rq_bias": np.zeros(512, np.int64),
                      "line1.weight": np.ones((5, 512), np.int8)}),
        ),
        # line0 alone is exactly at the limit (2048·512·8 bits); line1's weights go over it
        ["layer 1 'line1'", "line1.weight", "8,396,288 bits; at most 8,388,608 in all"],
    ),
}


def _rename_tensors(t: dict, old: str, new: str) -> None:
    for key in [k for k in t if k.startswith(old + ".")]:
        t[new + key[len(old):]] = t.pop(key)


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_bad_manifest_rejected_with_layer_and_field(mlp, case):
    meta, tensors = parts(mlp)
    mutate, expected = BAD_CASES[case]
    mutate(meta, tensors)
    with pytest.raises(ManifestError) as info:
        M.loads(raw_bytes(meta, tensors))
    message = str(info.value)
    for piece in expected:
        assert piece in message, f"{piece!r} not in {message!r}"


def test_truncated_file(tmp_path, mlp):
    data = mlp.to_bytes()
    for cut in (3, 20, len(data) // 2, len(data) - 1):
        path = tmp_path / f"cut{cut}.bsm"
        path.write_bytes(data[:cut])
        with pytest.raises(ManifestError, match="truncated|too short"):
            M.load(path)


def test_garbage_and_missing_file(tmp_path):
    path = tmp_path / "junk.bsm"
    path.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00not json at all!")
    with pytest.raises(ManifestError, match="not valid JSON"):
        M.load(path)
    with pytest.raises(ManifestError, match="no such file"):
        M.load(tmp_path / "absent.bsm")
    plain = tmp_path / "plain.safetensors"
    plain.write_bytes(save({"w": np.zeros(2, np.int64)}))
    with pytest.raises(ManifestError, match="no 'bitspike' metadata"):
        M.load(plain)


def test_save_is_atomic_and_leaves_no_temporaries(tmp_path, mlp):
    target = tmp_path / "sub" / "m.bsm"
    mlp.save(target)
    assert sorted(p.name for p in target.parent.iterdir()) == ["m.bsm"]


def test_replace_layer_revalidates(mlp):
    w = mlp.layers[1].weight.copy()
    w[0, 0] = 100
    with pytest.raises(ManifestError, match="above 3"):
        mlp.replace_layer("line1", weight=w)


# ---------------------------------------------------------------------------------------------
# issue 11: duplicate keys, accepted dtypes, graph rules, the command line


def test_duplicate_json_keys_are_refused(mlp):
    meta, tensors = parts(mlp)
    text = json.dumps(meta)
    assert text.count('"w_bits": 3') == 1
    doubled = text.replace('"w_bits": 3', '"w_bits": 3, "w_bits": 4')
    with pytest.raises(ManifestError, match=r"field 'w_bits'.*key 'w_bits' appears twice in the object named 'line1'"):
        M.loads(save(tensors, metadata={M.METADATA_KEY: doubled}))
    top = text.replace('"version": 1', '"version": 1, "version": 1')
    with pytest.raises(ManifestError, match="'version' appears twice"):
        M.loads(save(tensors, metadata={M.METADATA_KEY: top}))


def test_duplicate_keys_in_the_safetensors_header_are_refused(mlp):
    data = mlp.to_bytes()
    n = int.from_bytes(data[:8], "little")
    header = json.dumps(json.loads(data[8 : 8 + n]))
    # give one tensor's entry twice (json would keep the second one silently)
    start = header.index('"line0.bias": {')
    entry = header[start : header.index("}", start) + 1]
    raw = header.replace(entry, entry + ", " + entry, 1).encode()
    bad = len(raw).to_bytes(8, "little") + raw + data[8 + n :]
    with pytest.raises(ManifestError, match="safetensors header: key 'line0.bias' appears twice"):
        M.loads(bad)


@pytest.mark.parametrize("dtype", ["int8", "int16", "int32", "uint8", "uint16", "uint32"])
def test_narrow_integer_dtypes_load_exactly(mlp, dtype):
    meta, tensors = parts(mlp)
    tensors["line1.weight"] = tensors["line1.weight"].astype(dtype) if dtype.startswith("int") else np.abs(tensors["line1.weight"]).astype(dtype)
    got = M.loads(raw_bytes(meta, tensors))
    np.testing.assert_array_equal(got.layers[1].weight, tensors["line1.weight"].astype(np.int64))
    assert got.tensors()["line1.weight"].dtype == np.int64  # saved back canonically


def test_add_operand_rules():
    meta, tensors = parts(random_cnn(2, image=(1, 6, 6), channels=(3,), classes=3, residual=True))
    add = next(l for l in meta["layers"] if l["op"] == "add")
    for inputs, message in [
        (["conv0"], "add takes a list of 2 input name(s)"),
        (["conv0", "nowhere"], "'nowhere' is not the network input or an earlier layer"),
        (["conv0", "input"], "residual add needs equal shapes, got [3, 6, 6] and [1, 6, 6]"),
    ]:
        m2 = json.loads(json.dumps(meta))
        next(l for l in m2["layers"] if l["op"] == "add")["inputs"] = inputs
        with pytest.raises(ManifestError) as info:
            M.loads(raw_bytes(m2, tensors))
        assert f"'{add['name']}'" in str(info.value) and "'inputs'" in str(info.value) and message in str(info.value)


def _bad_file(tmp_path, mlp, kind):
    meta, tensors = parts(mlp)
    mutate, expected = BAD_CASES[kind]
    mutate(meta, tensors)
    path = tmp_path / "bad.bsm"
    path.write_bytes(raw_bytes(meta, tensors))
    return path, expected[-1]


def test_validate_command_refuses_with_exit_1_and_no_traceback(tmp_path, mlp):
    """The installed command itself, in its own interpreter: exit status 1 and one line, no traceback."""
    import subprocess
    import sys

    path, expected = _bad_file(tmp_path, mlp, "version float")
    proc = subprocess.run([sys.executable, "-m", "bitspike.cli", "manifest", "validate", str(path)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr and expected in proc.stderr


# each kind through the same entry point in this process (an interpreter start per kind cost 7 s of the run)
@pytest.mark.parametrize("kind", ["layer without inputs", "uint64 tensor", "300-character name",
                                  "huge input map", "layer nobody consumes"])
def test_validate_command_refuses_every_bad_kind_with_exit_1(tmp_path, mlp, kind, capsys):
    from bitspike.cli import main

    path, expected = _bad_file(tmp_path, mlp, kind)
    assert main(["manifest", "validate", str(path)]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and expected in err


def test_absurdly_nested_metadata_is_an_error_not_a_crash(mlp):
    _, tensors = parts(mlp)
    with pytest.raises(ManifestError, match="metadata is not valid JSON"):
        M.loads(save(tensors, metadata={M.METADATA_KEY: "[" * 100000 + "]" * 100000}))
