"""Where the shared example workflows live (../shared/examples, or LINKFLOW_EXAMPLES_DIR)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def examples_dir() -> Path:
    configured = os.environ.get("LINKFLOW_EXAMPLES_DIR")
    path = (
        Path(configured)
        if configured
        else Path(__file__).resolve().parents[2] / "shared" / "examples"
    )
    if not path.is_dir():
        raise FileNotFoundError(
            f"example workflows not found at {path} (set LINKFLOW_EXAMPLES_DIR)"
        )
    return path


def load_example(name: str) -> dict[str, Any]:
    return json.loads((examples_dir() / name).read_text())
