"""The article's cluster_watcher: logs each node that joins or leaves the cluster, with why.

    ClusterWatcher.start_link(name="cluster_watcher")

Its log lines (logger ``workers.cluster_watcher``, level INFO for joins, WARNING for leaves):

    Node node_b@host joined the cluster
    Node node_b@host left: net_tick_timeout
"""
from __future__ import annotations

import logging
from typing import Any

import otp

log = logging.getLogger(__name__)


class ClusterWatcher(otp.GenServer):
    """Subscribes to node events; ``report`` (optional) also gets each event as a message."""

    def init(self, report: otp.Pid | None = None) -> None:
        self.report = report
        otp.monitor_nodes(True)

    def handle_info(self, msg: Any) -> None:
        if isinstance(msg, otp.NodeUp):
            log.info("Node %s joined the cluster", msg.node)
        elif isinstance(msg, otp.NodeDown):
            log.warning("Node %s left: %s", msg.node, msg.reason)
        else:
            return
        if self.report is not None:
            otp.send(self.report, msg)


def start_link(report: otp.Pid | None = None) -> otp.Pid:
    return ClusterWatcher.start_link(report, name="cluster_watcher")
