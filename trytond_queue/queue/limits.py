"""Per-queue concurrency limits, held across every worker by slot locks.

``[queue] limits = mail:2, export:1`` allows at most two running tasks of
the queue ``mail`` and one of ``export``, whatever the number of
managers and hosts.  A queue of limit n has n slots; a worker process
takes a slot, an advisory lock of the session, before it claims a task
of that queue, and lets it go once the task's transaction has ended.
The database holds the count, so no race of two workers can exceed it,
and the lock of a dead process is released with its connection.

SQLite runs one task of a database at a time, which keeps any limit.
"""
import random
import re
import zlib

from sql import Flavor, Select
from sql.functions import Function

from ..config import config
from ..exceptions import ConfigError

__all__ = ['configured_limits', 'take_slot', 'free_slot']

# The first key of the advisory locks of slots.
SLOT_LOCK_CLASS = 0x7451_736C
LIMIT = re.compile(r'^([A-Za-z0-9_.-]{1,64}):([0-9]+)$')


class TryAdvisoryLock(Function):
    __slots__ = ()
    _function = 'PG_TRY_ADVISORY_LOCK'


class AdvisoryUnlock(Function):
    __slots__ = ()
    _function = 'PG_ADVISORY_UNLOCK'


def configured_limits() -> dict[str, int]:
    """Return {queue name: limit} of ``[queue] limits``."""
    limits = {}
    for item in config.getlist('queue', 'limits'):
        match = LIMIT.match(item)
        if not match or int(match.group(2)) < 1:
            raise ConfigError(
                f'The item {item!r} of [queue] limits is not valid: '
                'write QUEUE:LIMIT items, e.g. "limits = mail:2, '
                'export:1", with a limit of at least 1.')
        limits[match.group(1)] = int(match.group(2))
    return limits


def _slot_key(queue_name, index):
    return zlib.crc32(f'{queue_name}/{index}'.encode()) & 0x7FFF_FFFF


def take_slot(connection, database, queue_name, limit):
    """Take a free slot of the queue; return its key, or None if none."""
    if not database.has_advisory_lock:
        return 0
    Flavor.set(database.flavor)
    cursor = connection.cursor()
    indexes = list(range(limit))
    # Start anywhere, so that workers do not all try slot 0 first.
    random.shuffle(indexes)
    for index in indexes:
        key = _slot_key(queue_name, index)
        cursor.execute(*Select([TryAdvisoryLock(SLOT_LOCK_CLASS, key)]))
        if cursor.fetchone()[0]:
            return key
    return None


def free_slot(connection, database, key):
    """Let another worker take the slot."""
    if not database.has_advisory_lock:
        return
    Flavor.set(database.flavor)
    connection.cursor().execute(
        *Select([AdvisoryUnlock(SLOT_LOCK_CLASS, key)]))
