"""Command line.

    python -m otp demo                                   # the quick start
    python -m otp broker --bind tcp://HOST:PORT          # a broker that nodes join
    python -m otp run MODULE:FUNC [ARG...] --name N --cookie C --broker ADDR
    python -m otp shell --name N --cookie C --broker ADDR   # a Python prompt inside a node
    python -m otp jobs MODULE:FUNC --input FILE          # run a batch of jobs, JSON lines out
    python -m otp chaos --node N --broker ADDR --rate 5 --duration 30 --seed 1
    python -m otp observer --node N --broker ADDR [--once --json]
"""
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
    commands.add_parser("jobs", help="run MODULE:FUNC over a file of JSON argument lists (see python -m otp jobs --help)",
                        add_help=False)
    commands.add_parser("chaos", help="kill processes of a node at a steady rate, print what happened "
                        "(see python -m otp chaos --help)", add_help=False)
    commands.add_parser("observer", help="watch a node's supervision trees like top "
                        "(see python -m otp observer --help)", add_help=False)
    for command, text in (("run", "start a node and run MODULE:FUNC as its first process"),
                          ("shell", "start a node and open a Python prompt as its first process")):
        sub = commands.add_parser(command, help=text)
        if command == "run":
            sub.add_argument("target", metavar="MODULE:FUNC")
            sub.add_argument("args", nargs="*", help="passed to FUNC as strings")
        sub.add_argument("--name", default=None, help="node name (name or name@host)")
        sub.add_argument("--cookie", default=None, help="the cluster's cookie (default: $OTP_COOKIE or ~/.otp.cookie)")
        sub.add_argument("--broker", default=None, help="the broker to join, e.g. tcp://127.0.0.1:4370")
        sub.add_argument("--preload", action="append", default=[], help="module the node's processes start with")
    args, rest = parser.parse_known_args(argv)
    if args.command == "broker":
        from otp import broker
        broker.main(rest)
        return 0
    if args.command == "jobs":
        from otp import jobs
        return jobs.main(rest)
    if args.command == "chaos":
        from otp import chaos
        return chaos.main(rest)
    if args.command == "observer":
        from otp import observer
        return observer.main(rest)
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.command == "demo":
        from otp import demo
        return demo.main()
    if args.command in ("run", "shell"):
        return _run_node(args)
    return 2


def _run_node(args: argparse.Namespace) -> int:
    """Start a node, run the target (or a prompt) in the main thread, stop the node after."""
    import code
    import importlib
    import signal

    import otp

    if args.command == "run":
        module, _, qualname = args.target.partition(":")
        func = importlib.import_module(module)
        for part in qualname.split("."):
            func = getattr(func, part)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    with otp.Node(args.name, cookie=args.cookie, broker=args.broker, preload=args.preload) as node:
        if args.command == "shell":
            code.interact(banner=f"otp node {node.name} (otp.self() is {otp.self()}); Ctrl-D stops it",
                          local={"otp": otp}, exitmsg="")
            return 0
        result = func(*args.args)
    return result if type(result) is int else 0


if __name__ == "__main__":
    sys.exit(main())
