"""The wire codec: round trips keep types, bad values fail in the sender, hostile frames are refused."""
from __future__ import annotations

import collections

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from otp import codec
from otp.errors import DecodeError
from otp.terms import Down, Exit, NodeDown, NodeUp, Pid, Ref

names = st.text(max_size=12)
pids = st.builds(Pid, names, st.integers(0, 2**62), st.integers(0, 2**31))
refs = st.builds(Ref, names, st.integers(0, 2**31), st.integers(0, 2**62), st.integers(0, 2**62))
scalars = (st.none() | st.booleans() | st.integers(-2**63, 2**64 - 1) | st.floats(allow_nan=False)
           | st.text() | st.binary() | pids | refs)
hashables = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4).map(tuple), max_leaves=8)
terms = st.recursive(
    scalars,
    lambda inner: (st.lists(inner, max_size=5) | st.lists(inner, max_size=5).map(tuple)
                   | st.dictionaries(hashables, inner, max_size=5)
                   | st.builds(Exit, pids, inner) | st.builds(Down, refs, pids, inner)
                   | st.builds(NodeUp, names) | st.builds(NodeDown, names, inner)),
    max_leaves=30)


@settings(max_examples=300, deadline=None)
@given(terms)
def test_every_encodable_term_round_trips_with_its_types(term):
    assert _typed(codec.decode(codec.encode(term))) == _typed(term)


def _typed(term):
    """A structure that compares types as well as values (1 == True == 1.0 in Python)."""
    if isinstance(term, (list, tuple)):
        return (type(term).__name__, [_typed(t) for t in term])
    if isinstance(term, dict):
        return ("dict", sorted(((repr(_typed(k)), _typed(v)) for k, v in term.items()), key=lambda kv: kv[0]))
    return (type(term).__name__, repr(term))


def test_tuples_lists_and_bytes_keep_their_types():
    value = (1, [2, (3,)], b"raw", "text", {(1, "a"): [b""]})
    decoded = codec.decode(codec.encode(value))
    assert decoded == value and type(decoded) is tuple and type(decoded[1]) is list
    assert type(decoded[1][1]) is tuple and type(decoded[2]) is bytes


def test_subclasses_of_plain_types_travel_as_their_base_type():
    Point = collections.namedtuple("Point", "x y")
    assert codec.decode(codec.encode([Point(1, 2), collections.OrderedDict(a=1)])) == [(1, 2), {"a": 1}]


@pytest.mark.parametrize("value, type_name", [
    (object(), "object"), ({1, 2}, "set"), (lambda: 0, "function"), ([1, {"k": Exception()}], "Exception"),
])
def test_an_unencodable_value_raises_type_error_naming_its_type(value, type_name):
    with pytest.raises(TypeError, match=type_name):
        codec.encode(value)


def test_an_integer_beyond_64_bits_is_refused_with_type_error():
    with pytest.raises(TypeError):
        codec.encode(2**80)


@pytest.mark.parametrize("frame", [
    b"\xc1",                                              # never-used msgpack byte
    b"\x92\x01",                                          # truncated array
    msgpack.packb(msgpack.ExtType(99, b"\x90")),          # unknown ext code
    msgpack.packb(msgpack.ExtType(codec.EXT_PID, b"\x01")),                    # truncated pid
    msgpack.packb(msgpack.ExtType(codec.EXT_REF, b"\x00" * 20 + b"\xff")),     # ref node not UTF-8
    msgpack.packb(msgpack.ExtType(codec.EXT_TUPLE, b"\x90")),                  # a mark with a payload
    msgpack.packb({(1,): 2}, default=lambda o: list(o)) ,  # list as a map key
    b"\x91" * 100_000 + b"\xc0",                          # nested beyond msgpack's stack
])
def test_a_malformed_frame_raises_decode_error(frame):
    with pytest.raises(DecodeError):
        codec.decode(frame)


def test_nesting_beyond_the_limit_is_refused_both_ways():
    deep = ()
    for _ in range(3000):
        deep = (deep,)
    with pytest.raises(TypeError):
        codec.encode(deep)
    mark = msgpack.packb(msgpack.ExtType(codec.EXT_TUPLE, b""))
    frame = b""
    for _ in range(3000):
        frame = b"\x92" + mark + (frame or b"\xc0")
    with pytest.raises(DecodeError):
        codec.decode(frame)


@pytest.mark.parametrize("frame", [
    msgpack.packb(msgpack.ExtType(codec.EXT_TUPLE, b"")),                      # a mark alone
    b"\x92" + msgpack.packb(msgpack.ExtType(codec.EXT_EXIT, b"")) + b"\x01",   # Exit with one field
])
def test_a_container_mark_out_of_place_is_refused(frame):
    with pytest.raises(DecodeError):
        codec.decode(frame)


def test_a_frame_over_the_size_limit_is_refused(monkeypatch):
    monkeypatch.setattr(codec, "MAX_FRAME_SIZE", 100)
    with pytest.raises(DecodeError, match="exceeds"):
        codec.decode(codec.encode(b"x" * 200))
