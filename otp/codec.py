"""The wire codec: msgpack with ext types, so that what is sent is what is received.

Tuples stay tuples, lists stay lists, bytes stay bytes, dict keys may be any encodable hashable
value, and ``Pid``, ``Ref``, ``Exit``, ``Down``, ``NodeUp``, ``NodeDown``, ``Tcp``, ``TcpClosed``
cross as themselves::

    >>> decode(encode(("get", b"k", [1, 2.5], {(1, 2): None})))
    ('get', b'k', [1, 2.5], {(1, 2): None})

``encode`` raises ``TypeError`` naming the type of a value it cannot encode, so a bad message
fails in the sender. ``decode`` is bounded for hostile input (frame size, container lengths,
nesting depth, unknown ext codes, marks out of place) and raises ``otp.errors.DecodeError``
for anything malformed.
"""
from __future__ import annotations

import struct
import threading
from typing import Any

import msgpack

from otp.errors import DecodeError
from otp.terms import Down, Exit, NodeDown, NodeUp, Pid, Ref, Tcp, TcpClosed

if msgpack.version < (1, 2, 1):  # pragma: no cover - setup.cfg asks for it too
    raise ImportError(f"otp needs msgpack >= 1.2.1, found {msgpack.version}")

MAX_FRAME_SIZE = 64 * 1024 * 1024
"""Largest frame ``decode`` accepts, in bytes."""
EXT_TUPLE, EXT_PID, EXT_REF, EXT_EXIT, EXT_DOWN, EXT_NODEUP, EXT_NODEDOWN, EXT_TCP, EXT_TCP_CLOSED = range(1, 10)

# Containers (tuples and the signal messages) travel as a msgpack array whose first item is an
# empty ext "mark" naming the type: ``(1, 2)`` is ``[mark(tuple), 1, 2]``. The packer packs the
# array natively, and the unpacker's list hook turns marked arrays back into their type, so a
# nested term costs no nested packer or unpacker. Pids and refs are leaf ext types.

_new_tuple = tuple.__new__
_ExtType = msgpack.ExtType
_PID_HEAD = struct.Struct(">qI")         # id, creation; then the node name in UTF-8
_REF_HEAD = struct.Struct(">IqQ")        # creation, owner, serial; then the node name
_pid_cache: dict[Pid, msgpack.ExtType] = {}     # encoding the same pids again and again
_pid_decoded: dict[bytes, Pid] = {}             # and decoding them: a frozen dataclass is slow to make
_PID_CACHE_SIZE = 4096


def _ext(code: int, data: bytes) -> msgpack.ExtType:
    # ExtType's own constructor validates in Python; ours are valid by construction.
    return _new_tuple(_ExtType, (code, data))


_TUPLE_MARK, _EXIT_MARK, _DOWN_MARK, _NODEUP_MARK, _NODEDOWN_MARK, _TCP_MARK, _TCP_CLOSED_MARK = (
    _ext(code, b"") for code in (EXT_TUPLE, EXT_EXIT, EXT_DOWN, EXT_NODEUP, EXT_NODEDOWN, EXT_TCP, EXT_TCP_CLOSED))


def _pid_ext(pid: Pid) -> msgpack.ExtType:
    ext = _pid_cache.get(pid)
    if ext is None:
        if len(_pid_cache) >= _PID_CACHE_SIZE:
            _pid_cache.clear()
        ext = _pid_cache[pid] = _ext(EXT_PID, _PID_HEAD.pack(pid.id, pid.creation) + pid.node.encode())
    return ext


def _default(obj: Any) -> Any:
    """Turn what msgpack cannot pack natively into ext types (called by the packer)."""
    cls = type(obj)
    if cls is tuple:
        return [_TUPLE_MARK, *obj]
    if cls is Pid:
        return _pid_ext(obj)
    if cls is Ref:
        return _ext(EXT_REF, _REF_HEAD.pack(obj.creation, obj.owner, obj.serial) + obj.node.encode())
    if cls is Exit:
        return [_EXIT_MARK, obj.pid, obj.reason]
    if cls is Down:
        return [_DOWN_MARK, obj.ref, obj.pid, obj.reason]
    if cls is NodeUp:
        return [_NODEUP_MARK, obj.node]
    if cls is NodeDown:
        return [_NODEDOWN_MARK, obj.node, obj.reason]
    if cls is Tcp:
        return [_TCP_MARK, obj.sock, obj.data]
    if cls is TcpClosed:
        return [_TCP_CLOSED_MARK, obj.sock]
    # Subclasses of plain types (namedtuple, OrderedDict, IntEnum...) travel as their base type.
    if isinstance(obj, tuple):
        return [_TUPLE_MARK, *obj]
    if isinstance(obj, bool):
        return bool(obj)
    for base in (int, float, str, bytes, list, dict):
        if isinstance(obj, base):
            return base(obj)
    raise TypeError(f"otp cannot send a value of type {cls.__module__}.{cls.__qualname__}: {obj!r:.80}")


_packer = threading.local()


def encode(obj: Any) -> bytes:
    """Encode ``obj`` for the wire; ``TypeError`` names the type of anything unencodable."""
    try:
        packer = _packer.value
    except AttributeError:
        packer = _packer.value = msgpack.Packer(default=_default, strict_types=True, use_bin_type=True)
    try:
        return packer.pack(obj)
    except TypeError:
        packer.reset()
        raise
    except (OverflowError, ValueError, struct.error) as exc:  # int beyond 64 bits, too deep, bad pid
        packer.reset()
        raise TypeError(f"otp cannot send this value: {exc}") from None


class _Mark:
    """What a container mark decodes to before its array becomes the container."""

    __slots__ = ("build", "arity")

    def __init__(self, build: Any, arity: int | None) -> None:
        self.build, self.arity = build, arity


_MARKS = {EXT_TUPLE: _Mark(tuple, None), EXT_EXIT: _Mark(Exit, 2), EXT_DOWN: _Mark(Down, 3),
          EXT_NODEUP: _Mark(NodeUp, 1), EXT_NODEDOWN: _Mark(NodeDown, 2), EXT_TCP: _Mark(Tcp, 2),
          EXT_TCP_CLOSED: _Mark(TcpClosed, 1)}
_TUPLE = _MARKS[EXT_TUPLE]


def _ext_hook(code: int, data: bytes) -> Any:
    if not data:
        mark = _MARKS.get(code)
        if mark is not None:
            return mark
    elif code == EXT_PID:
        pid = _pid_decoded.get(data)
        if pid is not None:
            return pid
        try:
            proc_id, creation = _PID_HEAD.unpack_from(data)
            pid = Pid(data[_PID_HEAD.size:].decode(), proc_id, creation)
        except (struct.error, UnicodeDecodeError) as exc:
            raise DecodeError(f"malformed pid: {exc}") from None
        if len(_pid_decoded) >= _PID_CACHE_SIZE:
            _pid_decoded.clear()
        _pid_decoded[data] = pid
        return pid
    elif code == EXT_REF:
        try:
            creation, owner, serial = _REF_HEAD.unpack_from(data)
            return Ref(data[_REF_HEAD.size:].decode(), creation, owner, serial)
        except (struct.error, UnicodeDecodeError) as exc:
            raise DecodeError(f"malformed ref: {exc}") from None
    raise DecodeError(f"unknown or malformed ext type {code}")


def _list_hook(items: list) -> Any:
    if items:
        mark = items[0]
        if mark is _TUPLE:
            return tuple(items[1:])
        if type(mark) is _Mark:
            if len(items) - 1 != mark.arity:
                raise DecodeError(f"{mark.build.__name__} needs {mark.arity} fields, got {len(items) - 1}")
            return mark.build(*items[1:])
    return items


_unpackb = msgpack.unpackb


def decode(data: bytes) -> Any:
    """Decode one frame; raise ``DecodeError`` for anything malformed or over the limits."""
    if len(data) > MAX_FRAME_SIZE:
        raise DecodeError(f"frame of {len(data)} bytes exceeds {MAX_FRAME_SIZE}")
    try:
        term = _unpackb(data, ext_hook=_ext_hook, list_hook=_list_hook, strict_map_key=False)
    except DecodeError:
        raise
    except Exception as exc:  # msgpack raises many types: ExtraData, FormatError, StackError, ValueError...
        raise DecodeError(f"{type(exc).__name__}: {exc}") from None
    if type(term) is _Mark:
        raise DecodeError("a container mark out of place")
    return term


def rehearse() -> None:
    """Encode and decode a sample of the frames a process trades. A process forked ahead of
    its spawn does this while it waits (``Runtime.rehearse``): the first run of this module's
    code in a new process copies the pages it writes (reference counts, the interpreter's
    warm-up of the code) and takes the slow paths, and a spawn should not wait for that."""
    pid, ref = Pid("rehearsal@localhost", 1, 1), Ref("rehearsal@localhost", 1, 1, 1)
    sample = [("$gen_call", (pid, ref), ("ping", 1)), [b"reply", ref, ("ok", None)], Exit(pid, "killed"),
              Down(ref, pid, "normal"), {"k": [1, 2.5, b"v", None, True]}]
    for term in sample:
        decode(encode(term))
    _pid_cache.clear()
    _pid_decoded.clear()
