"""The frame vocabulary between processes and their node agent.

A frame to a process mailbox is either a message or a runtime frame:

- a message sent with ``otp.send`` is its codec encoding, nothing more (the fast path: no
  prefix to add or strip);
- a runtime frame starts with ``RUNTIME`` (0xc1, a byte msgpack never uses) and a kind byte:
  ``SIGNAL``, a signal turned message by the agent (``Exit``, ``Down``), whose body is the
  message; the receiver first takes every frame already waiting, so that what a dead process
  sent before dying is not overtaken by the news of its death. ``CONTROL``, runtime business
  (a reply to a request, an order to exit), whose body is a list ``[op, ...]``.

A frame to the agent is a codec list ``[op, sender_id, ...]``; the ops are below. Requests that
need an answer carry a ``tag``; the agent answers with the control frame ``[REPLY, tag, value]``.
"""
from __future__ import annotations

import struct

RUNTIME = 0xC1
SIGNAL_PREFIX = bytes([RUNTIME]) + b"s"
CONTROL_PREFIX = bytes([RUNTIME]) + b"c"

# control ops to a process
REPLY = "reply"          # [REPLY, tag, value]
KILL = "kill"            # [KILL, reason]: an embedded process must exit (it cannot be SIGKILLed)

# ops to the agent: [op, sender_id, ...]
SPAWN = "spawn"          # tag, funcref, args_bytes, link, monitor_ref, info | None -> reply id (by the
                         # new process once its mailbox is bound, or by the agent if it died first)
SPARE = "spare"          # tag, funcref, args_bytes: a linked spawn whose process monitors its
                         # spawner (the tag is the monitor's ref) and shows as a "spare"
TAKE_SPARE = "take_spare"  # spare id, tag, monitor_ref | None, info | None: the spawner hands the
                           # spare its work; the spare's monitor goes, the spawner's comes if asked
ATTACH = "attach"        # tag, token, os_pid -> reply id (a thread of an embedding program)
DETACH = "detach"        # reason (that thread's process ends)
LINK = "link"            # tag, pid -> reply True | "noproc"
UNLINK = "unlink"        # pid
MONITOR = "monitor"      # ref, pid | name
DEMONITOR = "demonitor"  # ref
EXIT = "exit"            # pid, reason
TRAP_EXIT = "trap_exit"  # flag
REGISTER = "register"    # tag, name, pid -> reply None | error text
UNREGISTER = "unregister"  # tag, name -> reply None | error text
WHEREIS = "whereis"      # tag, name -> reply id | None
REGISTERED = "registered"  # tag -> reply [names]
IS_ALIVE = "is_alive"    # tag, id -> reply bool
OS_PID = "os_pid"        # tag, id -> reply int | None
STOP_NODE = "stop_node"  # (from the embedding program)
SET_INFO = "set_info"    # id, {key: value}: facts for process_info (behaviour, supervisor, restarts)
PROCESS_INFO = "process_info"  # tag, pid -> reply {fields} | None (another node's pid: asked there)
PROCESSES = "processes"  # tag, node -> reply [pids] (another node: asked there)

# control ops to a process (continued)
INFO = "info"            # [INFO, tag, reply_to]: answer {"mailbox": n} at tag

# zygote <-> agent, length-prefixed codec lists over a unix stream socket
Z_START = "start"        # agent -> zygote, first: node name, creation, run directory, modules to preload
Z_WARM = "warm"          # zygote -> agent: os_pid, with the write end of its assignment pipe
Z_TAKEN = "taken"        # agent -> zygote: os_pid of the warm process assigned (None: none was left), spawns waiting
Z_STOP = "stop"          # agent -> zygote: kill every child and exit
Z_FORK_FAILED = "fork_failed"  # zygote -> agent: error text (a needed process could not be forked)
Z_EXITED = "exited"      # zygote -> agent: os_pid, wait status, reason bytes (b"" if none)

REGISTRY_GENERATION = "registry.gen"
"""A file in the run directory holding a 64-bit counter the agent bumps at every change of the
local names, so that a process may keep the answers of ``whereis`` until it moves."""

AGENT_ENDPOINT = "agent"
"""Name of the agent's mailbox in the run directory."""


def endpoint(rundir: str, name: str | int) -> str:
    """The ipc endpoint of a mailbox named ``name`` in the run directory."""
    return f"ipc://{rundir}/{name}"

# ops to the agent for the cluster (see otp.broker)
ROUTE = 0x52             # first byte of a frame for a process of another node (see route_frame_head)
NODES = "nodes"          # tag -> reply [node names]
MONITOR_NODES = "monitor_nodes"  # flag: NodeUp / NodeDown signals to the sender
REGISTER_NAME = "register_name"  # tag, name, pid -> reply True | False
UNREGISTER_NAME = "unregister_name"  # tag, name -> reply None
GLOBAL_WHEREIS = "global_whereis"  # tag, name -> reply Pid | None
GLOBAL_NAMES = "global_names"      # tag -> reply [names]
SET_LOCK = "set_lock"    # tag, resource (codec bytes), wait -> reply True | False
DEL_LOCK = "del_lock"    # resource (codec bytes)
NOT_IN_CLUSTER = "not_in_cluster"  # the answer to a cluster request on a node that joined no broker

# node agent <-> broker: multipart frames over one CURVE-encrypted DEALER -> ROUTER connection.
# The first part says what the rest is.
TO_PROCESS = b"R"        # [TO_PROCESS, node, batch]: frames for processes of `node` (see below)
TO_AGENT = b"A"          # [TO_AGENT, node, op]: agent to agent; the broker puts the sender's node in
TO_BROKER = b"B"         # [TO_BROKER, op]: between a node and the broker, both ways
MAX_NETWORK_FRAME = 16 * 2**20
"""Largest frame part a broker or a node accepts from the network."""
NODE_QUEUE = 100_000
"""Frames queued on one broker connection before what follows is dropped."""


# Frames for processes of other nodes travel in batches: whatever a node's agent has for one
# node when it looks goes out as one part, which the broker forwards without reading it, so a
# flood costs one ZeroMQ message (and one CURVE box) per batch, not per frame.
#
#   route frame (process -> its agent):  ROUTE | u8 len(node) | node | entry
#   entry:                               u16 len(dest) | dest (codec Pid or name) | body
#   batch (agent -> broker -> agent):    (u32 len(entry) | entry)*
_U8 = struct.Struct(">B")
_U16 = struct.Struct(">H")
U32 = struct.Struct(">I")


def route_frame_head(node: str, dest_bytes: bytes) -> bytes:
    """What precedes the body in a route frame to ``dest`` (a codec Pid or name) on ``node``."""
    node_bytes = node.encode()
    if len(node_bytes) > 255 or len(dest_bytes) > 65535:
        raise ValueError(f"node name or destination too long: {node!r}")
    return bytes([ROUTE]) + _U8.pack(len(node_bytes)) + node_bytes + _U16.pack(len(dest_bytes)) + dest_bytes


def split_route_frame(frame: bytes) -> tuple[bytes, bytes]:
    """``(node, entry)`` of a route frame."""
    end = 2 + frame[1]
    return frame[2:end], frame[end:]


def read_batch(batch: bytes):
    """Yield ``(dest_bytes, body)`` of each entry of a batch; raises ValueError if malformed."""
    view = memoryview(batch)
    offset, size = 0, len(batch)
    while offset < size:
        if size - offset < 6:
            raise ValueError("truncated batch")
        (length,) = U32.unpack_from(batch, offset)
        (dest_length,) = _U16.unpack_from(batch, offset + 4)
        end = offset + 4 + length
        if end > size or dest_length + 2 > length:
            raise ValueError("truncated batch entry")
        dest_end = offset + 6 + dest_length
        yield batch[offset + 6:dest_end], view[dest_end:end]
        offset = end
