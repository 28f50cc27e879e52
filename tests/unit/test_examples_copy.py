"""The vendored example workflows equal ../shared/examples, when that folder is present."""

from __future__ import annotations

import pytest
from examples import SHARED, VENDORED


@pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/examples is not beside this clone")
def test_vendored_examples_equal_the_shared_ones() -> None:
    shared = {p.name: p.read_bytes() for p in SHARED.iterdir() if p.is_file()}
    vendored = {p.name: p.read_bytes() for p in VENDORED.iterdir() if p.is_file()}
    assert vendored == shared
