"""The observer: every supervision tree of a node, with each process's figures, like ``top``.

    python -m otp observer --node node_a@host --broker tcp://127.0.0.1:4370 --cookie secret
    python -m otp observer --node node_a@host --broker ... --once --json     # for scripts

or, from a process of the node itself, ``otp.observer.snapshot()``. Each entry: ``id`` (its
child id), ``pid``, ``os_pid``, ``behaviour``, ``module``, ``status``, ``restarts``, ``mailbox``,
``memory_rss``, ``memory_uss``, ``cpu_percent`` (since the previous snapshot, None on the first)
and its ``children``, in their supervisor's order. Processes that no supervisor owns are roots.
"""
from __future__ import annotations

import time
from typing import Any

import otp

_FIELDS = ("os_pid", "behaviour", "module", "status", "restarts", "mailbox", "memory_rss", "memory_uss",
           "registered_name")


class Observer:
    """Snapshots of one node's trees; keeps CPU times between them for ``cpu_percent``."""

    def __init__(self, node: str | None = None) -> None:
        self.node = node
        self._cpu: dict[otp.Pid, tuple[float, float]] = {}

    def snapshot(self) -> list[dict[str, Any]]:
        me = otp.self()
        now = time.monotonic()
        infos = {}
        for pid in otp.processes(self.node):
            if pid == me:
                continue
            info = otp.process_info(pid, timeout=0.2)
            if info is not None and not info["embedded"]:
                infos[pid] = info
        entries = {pid: self._entry(pid, info, now) for pid, info in infos.items()}
        roots = []
        for pid, entry in entries.items():
            parent = infos[pid]["supervisor"]
            if parent in entries:
                entries[parent]["children"].append(entry)
            else:
                roots.append(entry)
        for entry in entries.values():
            if entry["children"]:  # in the supervisor's order (its start order), else by pid
                order = {pid: i for i, pid in enumerate(_child_pids(entry["pid"]))}
                entry["children"].sort(key=lambda e: (order.get(e["pid"], len(order)), e["pid"].id))
        return sorted(roots, key=lambda e: e["pid"].id)

    def _entry(self, pid: otp.Pid, info: dict, now: float) -> dict[str, Any]:
        cpu = None
        if info["cpu_user"] is not None:
            total = info["cpu_user"] + info["cpu_system"]
            before = self._cpu.get(pid)
            if before is not None and now > before[0]:
                cpu = round(100.0 * (total - before[1]) / (now - before[0]), 1)
            self._cpu[pid] = (now, total)
        entry = {"id": info["child_id"], "pid": pid, "cpu_percent": cpu, "children": []}
        entry.update({field: info[field] for field in _FIELDS})
        return entry


def _child_pids(sup: otp.Pid) -> list[otp.Pid]:
    try:
        return [pid for _, pid, _, _ in otp.supervisor.which_children(sup)]
    except otp.OtpError:
        return []


def snapshot(node: str | None = None) -> list[dict[str, Any]]:
    """One snapshot of ``node``'s trees (default: this node)."""
    return Observer(node).snapshot()


def to_json(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The snapshot with pids as text, for ``json.dumps``."""
    return [{**e, "pid": repr(e["pid"]), "children": to_json(e["children"])} for e in entries]


def render(node: str, entries: list[dict[str, Any]]) -> str:
    """A ``top``-like table of the trees."""
    lines = [f"otp observer: {node}   {time.strftime('%H:%M:%S')}",
             f"{'ID':<28}{'PID':<22}{'OS PID':>8} {'STATUS':<10}{'RESTARTS':>8}{'MAILBOX':>8}{'USS MB':>8}{'CPU %':>7}"]

    def walk(entry: dict, depth: int) -> None:
        label = ("  " * depth) + str(entry["id"] if entry["id"] is not None else entry["module"] or "-")
        uss = "-" if entry["memory_uss"] is None else f"{entry['memory_uss'] / 2**20:.1f}"
        lines.append(f"{label[:27]:<28}{repr(entry['pid'])[:21]:<22}{entry['os_pid'] or '-':>8} "
                     f"{entry['status'] or '-':<10}{_dash(entry['restarts']):>8}{_dash(entry['mailbox']):>8}"
                     f"{uss:>8}{_dash(entry['cpu_percent']):>7}")
        for child in entry["children"]:
            walk(child, depth + 1)
    for root in entries:
        walk(root, 0)
    return "\n".join(lines)


def _dash(value: Any) -> str:
    return "-" if value is None else str(value)


def main(argv: list[str] | None = None) -> int:
    """``python -m otp observer --node NAME --broker ADDR [--cookie C] [--once --json]``."""
    import argparse
    import json
    import os
    import socket
    import sys

    parser = argparse.ArgumentParser(prog="python -m otp observer", description=__doc__.split("\n\n")[0])
    parser.add_argument("--node", required=True, help="the node to watch (name@host)")
    parser.add_argument("--broker", required=True, help="the cluster's broker, e.g. tcp://127.0.0.1:4370")
    parser.add_argument("--cookie", default=None)
    parser.add_argument("--once", action="store_true", help="one snapshot, then exit")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between refreshes")
    args = parser.parse_args(argv)
    with otp.Node(f"observer-{os.getpid()}@{socket.gethostname()}", cookie=args.cookie, broker=args.broker):
        if args.node not in otp.nodes():
            parser.error(f"node {args.node} is not in the cluster (up: {', '.join(otp.nodes()) or 'none'})")
        observer = Observer(args.node)
        try:
            while True:
                entries = observer.snapshot()
                if args.json:
                    print(json.dumps(to_json(entries)), flush=True)
                else:
                    if not args.once and sys.stdout.isatty():
                        sys.stdout.write("\x1b[H\x1b[2J")
                    print(render(args.node, entries), flush=True)
                if args.once:
                    return 0
                time.sleep(args.interval)
        except KeyboardInterrupt:
            return 0
