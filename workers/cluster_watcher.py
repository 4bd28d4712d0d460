"""The article's cluster_watcher: prints each node that joins or leaves the cluster, with why.

    cluster_watcher.start_link()

prints, as the article's ``io:format`` does:

    Node node_b@host joined the cluster
    Node node_b@host left: net_tick_timeout
"""
from __future__ import annotations

from typing import Any

import otp


class ClusterWatcher(otp.GenServer):
    """Subscribes to node events; ``report`` (optional) also gets each event as a message."""

    def init(self, report: otp.Pid | None = None) -> None:
        self.report = report
        otp.monitor_nodes(True)

    def handle_info(self, msg: Any) -> None:
        if isinstance(msg, otp.NodeUp):
            print(f"Node {msg.node} joined the cluster", flush=True)
        elif isinstance(msg, otp.NodeDown):
            print(f"Node {msg.node} left: {msg.reason}", flush=True)
        else:
            return
        if self.report is not None:
            otp.send(self.report, msg)


def start_link(report: otp.Pid | None = None) -> otp.Pid:
    return ClusterWatcher.start_link(report, name="cluster_watcher")
