"""The save queue behind selective receive: messages that do not match stay, in order."""
from __future__ import annotations

from collections import deque
from itertools import islice
from typing import Any, Callable

Match = Callable[[Any], bool]
_NOTHING = object()


def as_predicate(match: Any) -> Match | None:
    """Accept a predicate, a type or a tuple of types (matched with ``isinstance``), or None."""
    if match is None or (callable(match) and not isinstance(match, type)):
        return match
    if isinstance(match, type) or (isinstance(match, tuple) and all(isinstance(t, type) for t in match)):
        types = match
        return lambda msg: isinstance(msg, types)
    raise TypeError(f"match must be a predicate, a type or a tuple of types; got {match!r}")


class Mailbox:
    """Messages received but not yet taken, with a scan position for one receive at a time.

    >>> box = Mailbox(); box.put(1); box.put("a"); box.put(2)
    >>> box.take(lambda m: isinstance(m, str), start=0)
    ('a', 1)
    >>> list(box)
    [1, 2]
    """

    __slots__ = ("_queue",)

    def __init__(self) -> None:
        self._queue: deque[Any] = deque()

    def put(self, msg: Any) -> None:
        self._queue.append(msg)

    def __bool__(self) -> bool:
        return bool(self._queue)

    def __len__(self) -> int:
        return len(self._queue)

    def __iter__(self):
        return iter(self._queue)

    def take(self, match: Match | None, start: int) -> tuple[Any, int]:
        """Remove and return the first message at or after ``start`` that matches.

        Returns ``(message, next_start)``; the message is ``NOTHING`` when none matched, and
        ``next_start`` is where the next scan should begin (everything before was checked).
        """
        queue = self._queue
        if match is None:
            if queue:
                return queue.popleft(), 0
            return _NOTHING, 0
        index = start
        for msg in islice(queue, start, None):
            if match(msg):
                del queue[index]
                return msg, index
            index += 1
        return _NOTHING, index

    def remove_if(self, predicate: Match) -> None:
        """Drop every message for which ``predicate`` is true (``demonitor(flush=True)``)."""
        kept = [m for m in self._queue if not predicate(m)]
        self._queue.clear()
        self._queue.extend(kept)


NOTHING = _NOTHING
