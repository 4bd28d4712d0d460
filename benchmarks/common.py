"""Helpers shared by the benchmarks: statistics, JSON lines, peer processes."""
from __future__ import annotations

import json
import os
import statistics
import sys
from typing import Any, Iterable

REPETITIONS = int(os.environ.get("BENCH_REPETITIONS", "5"))


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def median(values: Iterable[float]) -> float:
    return statistics.median(list(values))


def emit(result: dict[str, Any]) -> None:
    """Print one result as a JSON line, numbers rounded for reading."""
    rounded = {k: (round(v, 3) if isinstance(v, float) else v) for k, v in result.items()}
    print(json.dumps(rounded), flush=True)
    sys.stdout.flush()
