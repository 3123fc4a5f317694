"""bitspike.io: every write is whole or absent, and equal payloads give equal bytes."""

from __future__ import annotations

import os
import stat

import numpy as np
import pytest

from bitspike.io import atomic_dir, atomic_file, atomic_write_bytes, atomic_write_text, json_text, write_json


def _leftovers(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


def test_write_creates_parent_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "a" / "b" / "x.bin"
    assert atomic_write_bytes(path, b"\x00\x01") == path
    assert path.read_bytes() == b"\x00\x01"
    atomic_write_text(path, "é\n")  # replaces the old content
    assert path.read_bytes() == "é\n".encode()
    assert _leftovers(path.parent) == []


def test_a_failed_write_keeps_the_old_file(tmp_path):
    path = tmp_path / "x.txt"
    path.write_text("old")
    with pytest.raises(RuntimeError), atomic_file(path, "w") as fh:
        fh.write("half of the new")
        raise RuntimeError("killed")
    assert path.read_text() == "old"
    assert _leftovers(tmp_path) == []


def test_file_mode_follows_the_umask_not_mkstemp(tmp_path):
    old = os.umask(0o027)
    try:
        import bitspike.io

        bitspike.io._umask.cache_clear()
        atomic_write_text(tmp_path / "x", "y")
        (tmp_path / "plain").write_text("y")
    finally:
        os.umask(old)
        bitspike.io._umask.cache_clear()
    assert stat.S_IMODE((tmp_path / "x").stat().st_mode) == stat.S_IMODE((tmp_path / "plain").stat().st_mode) == 0o640


def test_write_json_is_canonical_and_skips_none(tmp_path):
    payload = {"b": np.int64(3), "a": [np.float32(0.5), tmp_path / "f"], "c": np.arange(2)}
    write_json(tmp_path / "s.json", payload)
    text = (tmp_path / "s.json").read_text()
    assert text == json_text({"c": [0, 1], "a": [0.5, str(tmp_path / "f")], "b": 3})
    assert text.startswith('{\n  "a"') and text.endswith("}\n")
    write_json(None, payload)  # an absent --json option writes nothing
    with pytest.raises(TypeError, match="not JSON serialisable: object"):
        json_text({"x": object()})


def test_atomic_dir_publishes_whole_or_not_at_all(tmp_path):
    final = tmp_path / "cache" / "key"
    with atomic_dir(final) as work:
        (work / "f").write_text("1")
        assert not final.exists()  # invisible until the block ends
    assert (final / "f").read_text() == "1"
    with atomic_dir(final) as work:  # a second writer of the same key: the first folder stays
        (work / "f").write_text("2")
    assert (final / "f").read_text() == "1"
    with atomic_dir(final, replace=True) as work:  # under a lock: replace a stale folder
        (work / "f").write_text("3")
    assert (final / "f").read_text() == "3"
    with pytest.raises(RuntimeError), atomic_dir(tmp_path / "cache" / "other") as work:
        (work / "f").write_text("4")
        raise RuntimeError("killed")
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == ["key"]
