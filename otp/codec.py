"""The wire codec: msgpack with ext types, so that what is sent is what is received.

Tuples stay tuples, lists stay lists, bytes stay bytes, dict keys may be any encodable hashable
value, and ``Pid``, ``Ref``, ``Exit``, ``Down``, ``NodeUp``, ``NodeDown`` cross as themselves::

    >>> decode(encode(("get", b"k", [1, 2.5], {(1, 2): None})))
    ('get', b'k', [1, 2.5], {(1, 2): None})

``encode`` raises ``TypeError`` naming the type of a value it cannot encode, so a bad message
fails in the sender. ``decode`` is bounded for hostile input (frame size, container lengths,
nesting depth, unknown ext codes) and raises ``otp.errors.DecodeError`` for anything malformed.
"""
from __future__ import annotations

import struct
import threading
from typing import Any

import msgpack

from otp.errors import DecodeError
from otp.terms import Down, Exit, NodeDown, NodeUp, Pid, Ref

if msgpack.version < (1, 0, 5):  # pragma: no cover - guarded by setup.cfg too
    raise ImportError(f"otp needs msgpack >= 1.0.5, found {msgpack.version}")

MAX_FRAME_SIZE = 64 * 1024 * 1024
"""Largest frame ``decode`` accepts, in bytes."""
MAX_DEPTH = 64
"""Deepest nesting of tuples and otp terms ``decode`` accepts (lists and dicts are bounded by
msgpack). Each level costs a msgpack unpacking context on the C stack (about 40 KB)."""

EXT_TUPLE, EXT_PID, EXT_REF, EXT_EXIT, EXT_DOWN, EXT_NODEUP, EXT_NODEDOWN = range(1, 8)

_new_tuple = tuple.__new__
_ExtType = msgpack.ExtType
_PID_HEAD = struct.Struct(">qI")         # id, creation; then the node name in UTF-8
_REF_HEAD = struct.Struct(">IqQ")        # creation, owner, serial; then the node name
_pid_cache: dict[Pid, msgpack.ExtType] = {}
_PID_CACHE_SIZE = 4096


def _ext(code: int, data: bytes) -> msgpack.ExtType:
    # ExtType's own constructor validates in Python; ours are valid by construction.
    return _new_tuple(_ExtType, (code, data))


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
        return _ext(EXT_TUPLE, _pack(list(obj)))
    if cls is Pid:
        return _pid_ext(obj)
    if cls is Ref:
        return _ext(EXT_REF, _REF_HEAD.pack(obj.creation, obj.owner, obj.serial) + obj.node.encode())
    if cls is Exit:
        return _ext(EXT_EXIT, _pack([obj.pid, obj.reason]))
    if cls is Down:
        return _ext(EXT_DOWN, _pack([obj.ref, obj.pid, obj.reason]))
    if cls is NodeUp:
        return _ext(EXT_NODEUP, _pack([obj.node]))
    if cls is NodeDown:
        return _ext(EXT_NODEDOWN, _pack([obj.node, obj.reason]))
    # Subclasses of plain types (namedtuple, OrderedDict, IntEnum...) travel as their base type.
    if isinstance(obj, tuple):
        return _ext(EXT_TUPLE, _pack(list(obj)))
    if isinstance(obj, bool):
        return bool(obj)
    for base in (int, float, str, bytes, list, dict):
        if isinstance(obj, base):
            return base(obj)
    raise TypeError(f"otp cannot send a value of type {cls.__module__}.{cls.__qualname__}: {obj!r:.80}")


def _new_packer() -> msgpack.Packer:
    return msgpack.Packer(default=_default, strict_types=True, use_bin_type=True)


_spare_packers: list[msgpack.Packer] = []


def _pack(obj: Any) -> bytes:
    # A packer may not be re-entered from its own default hook: each nesting level (and each
    # thread) takes its own packer from the spares and gives it back.
    try:
        packer = _spare_packers.pop()
    except IndexError:
        packer = _new_packer()
    try:
        return packer.pack(obj)
    except BaseException:
        packer.reset()
        raise
    finally:
        _spare_packers.append(packer)


def encode(obj: Any) -> bytes:
    """Encode ``obj`` for the wire; ``TypeError`` names the type of anything unencodable."""
    try:
        return _pack(obj)
    except (OverflowError, ValueError, struct.error) as exc:  # int beyond 64 bits, too deep, bad pid
        raise TypeError(f"otp cannot send this value: {exc}") from None


_depth = threading.local()
_unpackb = msgpack.unpackb


def _ext_hook(code: int, data: bytes) -> Any:
    if code == EXT_TUPLE:  # the common case first
        depth = getattr(_depth, "value", 0)
        if depth >= MAX_DEPTH:
            raise DecodeError(f"nesting deeper than {MAX_DEPTH}")
        _depth.value = depth + 1
        try:
            items = _unpackb(data, ext_hook=_ext_hook, strict_map_key=False)
        finally:
            _depth.value = depth
        if type(items) is not list:
            raise DecodeError("tuple payload is not an array")
        return tuple(items)
    if code == EXT_PID:
        try:
            proc_id, creation = _PID_HEAD.unpack_from(data)
            return Pid(data[_PID_HEAD.size:].decode(), proc_id, creation)
        except (struct.error, UnicodeDecodeError) as exc:
            raise DecodeError(f"malformed pid: {exc}") from None
    if code == EXT_REF:
        try:
            creation, owner, serial = _REF_HEAD.unpack_from(data)
            return Ref(data[_REF_HEAD.size:].decode(), creation, owner, serial)
        except (struct.error, UnicodeDecodeError) as exc:
            raise DecodeError(f"malformed ref: {exc}") from None
    depth = getattr(_depth, "value", 0)
    if depth >= MAX_DEPTH:
        raise DecodeError(f"nesting deeper than {MAX_DEPTH}")
    _depth.value = depth + 1
    try:
        items = _unpackb(data, ext_hook=_ext_hook, strict_map_key=False)
    finally:
        _depth.value = depth
    try:
        if code == EXT_EXIT:
            pid, reason = items
            return Exit(pid, reason)
        elif code == EXT_DOWN:
            ref, pid, reason = items
            return Down(ref, pid, reason)
        elif code == EXT_NODEUP:
            (node,) = items
            return NodeUp(node)
        elif code == EXT_NODEDOWN:
            node, reason = items
            return NodeDown(node, reason)
        else:
            raise DecodeError(f"unknown ext code {code}")
    except (TypeError, ValueError) as exc:
        raise DecodeError(f"malformed ext {code}: {exc}") from None
    raise DecodeError(f"malformed ext {code}")


def decode(data: bytes) -> Any:
    """Decode one frame; raise ``DecodeError`` for anything malformed or over the limits."""
    if len(data) > MAX_FRAME_SIZE:
        raise DecodeError(f"frame of {len(data)} bytes exceeds {MAX_FRAME_SIZE}")
    try:
        return _unpackb(data, ext_hook=_ext_hook, strict_map_key=False)
    except DecodeError:
        raise
    except Exception as exc:  # msgpack raises many types: ExtraData, FormatError, StackError, ValueError...
        raise DecodeError(f"{type(exc).__name__}: {exc}") from None
