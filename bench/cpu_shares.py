"""`python -m bench.cpu_shares SECONDS`: CPU share of each process group over an interval, read
from /proc/<pid>/stat (PostgreSQL backends together, Redis, each `linkflow run <role>`, the
rest), to divide by a run's rate for CPU per execution. Prints one JSON line. Used by hand
during a bench run (docs/performance.md, "What limits it"); nothing imports it.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections import Counter


def _snapshot() -> dict[str, tuple[str, int]]:
    """pid -> (command line, user + system clock ticks so far)."""
    found: dict[str, tuple[str, int]] = {}
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/stat") as stat, open(f"/proc/{pid}/cmdline", "rb") as cmd:
                fields = stat.read().rpartition(")")[2].split()
                cmdline = cmd.read().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
        found[pid] = (cmdline, int(fields[11]) + int(fields[12]))
    return found


def _group(cmdline: str) -> str:
    if "postgres" in cmdline:
        return "postgres"
    if "redis-server" in cmdline:
        return "redis"
    if "gateways.cli run" in cmdline:
        return cmdline.split()[-1]
    if "-m bench" in cmdline:
        return "bench"
    return "other"


def shares(seconds: float) -> dict[str, float]:
    """% of one core used by each group over the next `seconds`."""
    before = _snapshot()
    started = time.monotonic()
    time.sleep(seconds)
    after = _snapshot()
    elapsed = time.monotonic() - started
    ticks: Counter[str] = Counter()
    for pid, (cmdline, used) in after.items():
        ticks[_group(cmdline)] += used - before.get(pid, (cmdline, 0))[1]
    per_s = os.sysconf("SC_CLK_TCK") * elapsed
    result = {group: round(100 * n / per_s, 1) for group, n in ticks.most_common() if n > 0}
    result["total"] = round(sum(result.values()), 1)
    return result


if __name__ == "__main__":
    print(json.dumps(shares(float(sys.argv[1]) if len(sys.argv) > 1 else 8.0)))
