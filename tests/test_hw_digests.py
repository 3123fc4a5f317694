"""The generated hardware is byte-identical to the recorded digests (tests/hw_digests.py)."""

from __future__ import annotations

import json

import pytest

from hw_digests import DIGESTS, cases, compute


@pytest.mark.parametrize("name", [c[0] for c in cases()])
def test_generated_files_match_recorded_digests(name):
    want = json.loads(DIGESTS.read_text())[name]
    got = compute([name])[name]
    changed = sorted(f for f in set(want) | set(got) if want.get(f) != got.get(f))
    assert not changed, (f"{name}: {changed} differ from tests/data/hw_digests.json; if deliberate, re-record with "
                         "`python tests/hw_digests.py --record` and say why in the commit")
