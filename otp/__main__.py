"""Command line: ``python -m otp demo`` and ``python -m otp broker --bind tcp://HOST:PORT``."""
from __future__ import annotations

import argparse
import logging
import sys


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="python -m otp", description="Erlang/OTP's fault tolerance for Python")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("demo", help="a supervision tree from the article: crashes injected, restarts shown")
    commands.add_parser("broker", help="run a broker that nodes join (see python -m otp broker --help)",
                        add_help=False)
    args, rest = parser.parse_known_args(argv)
    if args.command == "broker":
        from otp import broker
        broker.main(rest)
        return 0
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.command == "demo":
        from otp import demo
        return demo.main()
    return 2


if __name__ == "__main__":
    sys.exit(main())
