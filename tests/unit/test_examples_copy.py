"""The vendored example workflows hold ../shared/examples unchanged, when that folder is present
(they may be ahead of it: examples of node types the shared copy does not have yet)."""

from __future__ import annotations

import pytest
from examples import SHARED, VENDORED


@pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/examples is not beside this clone")
def test_vendored_examples_hold_the_shared_ones() -> None:
    shared = {p.name: p.read_bytes() for p in SHARED.glob("*.json")}
    vendored = {p.name: p.read_bytes() for p in VENDORED.glob("*.json") if p.name in shared}
    assert vendored == shared
    vendored_readme = (VENDORED / "README.md").read_text().splitlines()
    missing = [
        line
        for line in (SHARED / "README.md").read_text().splitlines()
        if line not in vendored_readme
    ]
    assert not missing
