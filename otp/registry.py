"""The local registry's generation counter, shared through a file of the run directory.

The agent owns the name table and bumps the counter at every change (register, unregister, a
named process's death). A process keeps the answers of ``whereis`` with the generation read
*before* it asked, and trusts them while the counter has not moved: a call or a send by name
then costs no round trip to the agent, and never sees a table older than the last change it
could have seen.
"""
from __future__ import annotations

import mmap
import os
import struct

from otp import protocol as P

_COUNTER = struct.Struct("=Q")


class RegistryGeneration:
    """The counter, mapped in memory: the agent writes it, every process reads it."""

    def __init__(self, memory: mmap.mmap) -> None:
        self._memory = memory

    @classmethod
    def create(cls, rundir: str) -> "RegistryGeneration":
        """The agent's side: make the file and map it for writing."""
        path = os.path.join(rundir, P.REGISTRY_GENERATION)
        with open(path, "wb+") as f:
            f.write(bytes(_COUNTER.size))
            f.flush()
            return cls(mmap.mmap(f.fileno(), _COUNTER.size))

    @classmethod
    def open(cls, rundir: str) -> "RegistryGeneration | None":
        """A process's side: map the file read-only (None if the node has none)."""
        try:
            with open(os.path.join(rundir, P.REGISTRY_GENERATION), "rb") as f:
                return cls(mmap.mmap(f.fileno(), _COUNTER.size, access=mmap.ACCESS_READ))
        except (OSError, ValueError):
            return None

    def read(self) -> int:
        return _COUNTER.unpack_from(self._memory)[0]

    def bump(self) -> None:
        _COUNTER.pack_into(self._memory, 0, self.read() + 1)
