"""The command line: help everywhere, manifest inspect/validate, JSON summaries, errors without tracebacks."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from bitspike import __version__
from bitspike.cli import build_parser, main
from bitspike.testing import random_cnn, random_mlp


def subcommands() -> list[list[str]]:
    parser = build_parser()
    out = []
    for action in parser._subparsers._group_actions:  # noqa: SLF001 (argparse keeps them here)
        for name, sub in action.choices.items():
            out.append([name])
            nested = sub._subparsers._group_actions if sub._subparsers else []  # noqa: SLF001
            for inner in nested:
                out += [[name, n] for n in inner.choices]
    return out


def test_top_level_help_and_version(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    assert "manifest" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["--version"])
    assert __version__ in capsys.readouterr().out


def test_every_subcommand_has_help(capsys):
    cmds = subcommands()
    assert ["manifest", "inspect"] in cmds and ["manifest", "validate"] in cmds
    for cmd in cmds:
        with pytest.raises(SystemExit) as e:
            main(cmd + ["--help"])
        assert e.value.code == 0, cmd
        assert "usage: bitspike " + " ".join(cmd) in capsys.readouterr().out


def test_inspect_prints_table_and_totals(tmp_path, capsys):
    path = random_cnn(3, residual=True).save(tmp_path / "net.bsm")
    out_json = tmp_path / "summary.json"
    assert main(["manifest", "inspect", str(path), "--ranges", "--json", str(out_json)]) == 0
    text = capsys.readouterr().out
    for word in ("conv2d", "maxpool", "add", "flatten", "B_w/B_s/T", "S-ACE", "bit budget", "weight memory", "register"):
        assert word in text
    summary = json.loads(out_json.read_text())
    assert set(summary["avg_bits"]) == {"w", "s", "t"}
    assert summary["weight_memory_bits"] > 0 and len(summary["layers"]) == 8
    assert summary["ranges"]["conv0"]["x"] == {"lo": 0, "hi": 255, "width": 8, "signed": False}


def test_json_output_is_byte_identical(tmp_path):
    path = random_mlp(4).save(tmp_path / "m.bsm")
    main(["manifest", "inspect", str(path), "-q", "--json", str(tmp_path / "a.json")])
    main(["manifest", "inspect", str(path), "-q", "--json", str(tmp_path / "b.json")])
    assert (tmp_path / "a.json").read_bytes() == (tmp_path / "b.json").read_bytes()


def test_validate_good_and_bad(tmp_path, capsys):
    good = random_mlp(5).save(tmp_path / "good.bsm")
    assert main(["manifest", "validate", str(good)]) == 0
    assert "valid bitspike manifest" in capsys.readouterr().out
    bad = tmp_path / "bad.bsm"
    bad.write_bytes(good.read_bytes()[:100])
    assert main(["manifest", "validate", str(bad)]) == 1
    err = capsys.readouterr().err
    assert "error:" in err and "truncated" in err


@pytest.mark.parametrize("content", [b"", b"garbage" * 10, b"\xff" * 64])
def test_bad_files_never_give_a_traceback(tmp_path, content):
    bad = tmp_path / "bad.bsm"
    bad.write_bytes(content)
    proc = subprocess.run([sys.executable, "-m", "bitspike.cli", "manifest", "inspect", str(bad)], capture_output=True, text=True)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert "bitspike manifest: error:" in proc.stderr


def test_usage_errors_exit_2(capsys):
    with pytest.raises(SystemExit) as e:
        main(["manifest", "inspect"])
    assert e.value.code == 2
