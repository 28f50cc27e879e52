"""`python -m bench.cpu_shares`: one JSON line of CPU shares, in which a busy process shows."""

from __future__ import annotations

import json
import multiprocessing
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _spin(seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass


def test_a_busy_process_shows_in_the_shares() -> None:
    busy = multiprocessing.Process(target=_spin, args=(3.0,))
    busy.start()
    try:
        out = subprocess.run(
            [sys.executable, "-m", "bench.cpu_shares", "1"],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout
    finally:
        busy.join()
    measured = json.loads(out)
    # The spinning child runs pytest's command line: grouped as "other", about one core.
    assert measured["other"] >= 40.0
    assert measured["total"] >= measured["other"]
