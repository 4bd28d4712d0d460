"""Command line: ``python -m otp demo``."""
from __future__ import annotations

import argparse
import logging
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m otp", description="Erlang/OTP's fault tolerance for Python")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("demo", help="linked OS processes, one killed with SIGKILL, the signals shown")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.command == "demo":
        from otp import demo
        return demo.main()
    return 2


if __name__ == "__main__":
    sys.exit(main())
