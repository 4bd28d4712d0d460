"""``python -m workers.chat --port 5555 [--name N --cookie C --broker ADDR]``: run the chat."""
from __future__ import annotations

import argparse
import secrets
import signal
import sys

import otp
from workers.chat.chat_sup import ChatSup


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m workers.chat")
    parser.add_argument("--port", type=int, default=5555)
    parser.add_argument("--name", default="chat")
    parser.add_argument("--cookie", default=None)
    parser.add_argument("--broker", default=None, help="join a cluster (the room manager is global)")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    private = None
    if args.broker is None:  # the room manager is a global name: a one-node cluster of our own
        args.cookie = secrets.token_hex(16)
        private = otp.Broker("tcp://127.0.0.1:0", cookie=args.cookie).start()
        args.broker = private.address
    try:
        with otp.Node(args.name, cookie=args.cookie, broker=args.broker) as node:
            return _serve(node, args.port)
    finally:
        if private is not None:
            private.stop()


def _serve(node: otp.Node, port: int) -> int:
    ChatSup.start_link(port, otp.self())
    _, port = otp.receive(match=lambda m: type(m) is tuple and m[0] == "listening")
    print(f"chat on port {port} (node {node.name}); Ctrl-C stops it", flush=True)
    try:
        otp.receive(match=lambda m: False)
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
