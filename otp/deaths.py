"""The kernel's word that a process died, for a process that is not its parent: the agent.

The zygote forks every process of a node, reaps it and then tells the agent, one hop later. A
pidfd (Linux 5.3) becomes readable as soon as its process has died, so the agent, holding one
per process, hears of each death when the zygote does. For a process killed by a signal
(SIGKILL, a segfault) the wait status is the whole exit reason, and it can be read without
the zygote: from the pidfd once the zygote has reaped the process (Linux 6.15), or from
``/proc`` while the process is a zombie. A process that ended on its own wrote its exit reason
to the zygote, whose report stays the word on it; so does every death where pidfds are missing.

    watch = DeathWatch(zygote_pid)
    watch.add(proc_id, os_pid)                # once the process is forked
    poller.register(watch.fileno(), zmq.POLLIN)
    for proc_id, os_pid, status in watch.deaths():   # status None: the zygote will tell
        ...
    watch.discard(proc_id)                    # a death learnt otherwise
"""
from __future__ import annotations

import errno
import fcntl
import logging
import os
import resource
import select
import struct

log = logging.getLogger("otp.agent")

_PIDFD_GET_INFO = 0xC040FF0B
"""``_IOWR(0xFF, 11, struct pidfd_info)``, with the 64 bytes of the struct's first version."""
_PIDFD_INFO_EXIT = 1 << 3
_PIDFD_INFO = struct.Struct("=QQ11Ii")   # mask, cgroupid, pid ... fsgid, exit_code
_UNSUPPORTED = (errno.ENOTTY, errno.EINVAL, errno.EOPNOTSUPP)
MAX_DESCRIPTORS = 1 << 20


def raise_descriptor_limit() -> None:
    """Let this process hold as many descriptors as the system allows, not the 1,024 a shell
    often starts with (the agent: a socket to each process it signals, a pidfd for each)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = MAX_DESCRIPTORS if hard == resource.RLIM_INFINITY else min(hard, MAX_DESCRIPTORS)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
        except (ValueError, OSError) as exc:
            log.debug("descriptor limit left at %d: %s", soft, exc)


class DeathWatch:
    """One pidfd per watched process, in an epoll set the caller polls (see the module doc)."""

    def __init__(self, zygote_pid: int) -> None:
        self._zygote_pid = zygote_pid
        self._epoll = select.epoll() if hasattr(os, "pidfd_open") else None
        self._procs: dict[int, tuple[int, int]] = {}   # pidfd -> (process id, os pid)
        self._fds: dict[int, int] = {}                 # process id -> pidfd
        # Pidfds take file descriptors that the node's sockets need more: at most a quarter.
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        self._capacity = (MAX_DESCRIPTORS if soft == resource.RLIM_INFINITY else soft) // 4
        self._exit_info = True                         # the kernel keeps exit statuses in pidfds

    def fileno(self) -> int | None:
        """The descriptor to poll, readable when a watched process has died; None without pidfds."""
        return None if self._epoll is None else self._epoll.fileno()

    def add(self, proc_id: int, os_pid: int) -> None:
        """Watch a process from now on, if the kernel and the descriptor budget allow."""
        if self._epoll is None or len(self._fds) >= self._capacity:
            return
        try:
            fd = os.pidfd_open(os_pid)
        except OSError as exc:  # gone already, or no descriptor left: the zygote reports it
            log.debug("process %d (os pid %d) not watched: %s", proc_id, os_pid, exc)
            if exc.errno in (errno.ENOSYS, errno.EPERM):   # before Linux 5.3, or a sandbox's no
                self._capacity = 0                          # (the epoll set stays, empty)
            return
        self._epoll.register(fd, select.EPOLLIN)
        self._procs[fd] = (proc_id, os_pid)
        self._fds[proc_id] = fd

    def discard(self, proc_id: int) -> None:
        fd = self._fds.pop(proc_id, None)
        if fd is not None:
            del self._procs[fd]
            self._epoll.unregister(fd)
            os.close(fd)

    def deaths(self) -> list[tuple[int, int, int | None]]:
        """The watched processes that died, as (process id, os pid, wait status if the kernel
        gives it; None: only the zygote can tell); they are watched no more."""
        if self._epoll is None:
            return []
        dead = []
        for fd, _ in self._epoll.poll(0):
            proc_id, os_pid = self._procs[fd]
            dead.append((proc_id, os_pid, self._status(fd, os_pid)))
            self.discard(proc_id)
        return dead

    def _status(self, pidfd: int, os_pid: int) -> int | None:
        try:  # not reaped yet (the agent is often first): a zombie's stat holds its status
            fd = os.open(f"/proc/{os_pid}/stat", os.O_RDONLY)
            try:
                stat = os.read(fd, 4096)
            finally:
                os.close(fd)
            fields = stat[stat.rindex(b")") + 2:].split()   # from field 3, the state
            if fields[0] == b"Z" and int(fields[1]) == self._zygote_pid:
                return int(fields[49])                        # field 52, exit_code
        except (OSError, ValueError, IndexError):
            pass
        if self._exit_info:  # reaped: the kernel may have kept the status in the pidfd
            info = bytearray(_PIDFD_INFO.size)
            _PIDFD_INFO.pack_into(info, 0, _PIDFD_INFO_EXIT, 0, *(0,) * 11, 0)
            try:
                fcntl.ioctl(pidfd, _PIDFD_GET_INFO, info)
            except OSError as exc:
                if exc.errno in _UNSUPPORTED:
                    self._exit_info = False
            else:
                fields = _PIDFD_INFO.unpack_from(info)
                if fields[0] & _PIDFD_INFO_EXIT:
                    return fields[-1]
        return None
