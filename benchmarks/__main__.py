"""``python -m benchmarks [NAME ...]``: run the benchmarks, one JSON line per result."""
from __future__ import annotations

import argparse
import importlib

BENCHMARKS = ["roundtrip", "throughput", "spawn", "gen_call", "restart", "scale", "cluster", "jobs", "resilience"]


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks")
    parser.add_argument("names", nargs="*", metavar="NAME",
                        help=f"benchmarks to run, of {', '.join(BENCHMARKS)} (default: all)")
    args = parser.parse_args()
    unknown = sorted(set(args.names) - set(BENCHMARKS))
    if unknown:
        parser.error(f"unknown benchmark {', '.join(unknown)}; choose from {', '.join(BENCHMARKS)}")
    for name in args.names or BENCHMARKS:
        importlib.import_module(f"benchmarks.{name}").run()


if __name__ == "__main__":
    main()
