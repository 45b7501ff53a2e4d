"""CPU time of a worker's processes and of their database backends.

On a machine with few cores the drain is bound by CPU: the time that
the worker processes spend in Python and the time that the PostgreSQL
backends spend on their statements add up to what a task costs.  The
times are read from ``/proc``, so on other systems nothing is measured.
"""
import os

from sql import Table
from sql.functions import Function

__all__ = ['CpuMeter']

TICKS = os.sysconf('SC_CLK_TCK') if hasattr(os, 'sysconf') else 100


class BackendPid(Function):
    __slots__ = ()
    _function = 'PG_BACKEND_PID'


def _stat(pid):
    """Return (parent pid, CPU seconds) of a process, or None if gone."""
    try:
        with open(f'/proc/{pid}/stat') as fp:
            text = fp.read()
    except OSError:
        return None
    # The command name, in parentheses, may hold spaces.
    fields = text[text.rindex(')') + 2:].split()
    return int(fields[1]), (int(fields[11]) + int(fields[12])) / TICKS


def _children(pid):
    """Return the child processes of a process, from its threads' lists."""
    children = []
    try:
        threads = os.listdir(f'/proc/{pid}/task')
    except OSError:
        return children
    for thread in threads:
        try:
            with open(f'/proc/{pid}/task/{thread}/children') as fp:
                children.extend(int(c) for c in fp.read().split())
        except OSError:
            continue
    return children


def _descendants(root):
    # Reading the children lists of the few processes concerned costs
    # far less than scanning /proc, which would steal CPU from the
    # processes measured.
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(_children(pid))
    return found


class CpuMeter:
    """Sample the CPU seconds spent by a worker and by the server."""

    def __init__(self, backend, cursor, root, include_root=True):
        self.backend = backend
        self.cursor = cursor
        self.root = root
        self.include_root = include_root
        self.available = os.path.isdir('/proc')

    def sample(self):
        """Return (worker seconds, server seconds) so far, or None."""
        if not self.available:
            return None
        pids = _descendants(self.root)
        if not self.include_root:
            pids.remove(self.root)
        worker = sum(s[1] for s in map(_stat, pids) if s is not None)
        server = sum(
            s[1] for s in map(_stat, self._backends()) if s is not None)
        return worker, server

    def _backends(self):
        if not self.backend.is_postgresql:
            return []
        activity = Table('pg_stat_activity')
        self.backend.execute(self.cursor, activity.select(
            activity.pid,
            where=(activity.datname == self.backend.name)
            & (activity.pid != BackendPid())))
        return [pid for pid, in self.cursor]
