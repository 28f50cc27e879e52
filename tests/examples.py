"""The example workflows of ../shared/examples, as vendored in tests/data/examples.

The copy keeps the suite runnable from any clone; `tests/unit/test_examples_copy.py` fails when it
drifts from ../shared/examples (when that folder is beside the repository).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

VENDORED = Path(__file__).resolve().parent / "data" / "examples"
SHARED = Path(__file__).resolve().parents[2] / "shared" / "examples"


def example_names() -> list[str]:
    return sorted(p.name for p in VENDORED.glob("*.json"))


def load_example(name: str) -> dict[str, Any]:
    return json.loads((VENDORED / name).read_text())
