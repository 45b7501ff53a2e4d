"""Running tasks right after the enqueuing transaction commits.

With ``[queue] worker = False`` nobody else runs the tasks: once the
caller's transaction has committed, its tasks run here, in enqueue
order, each claimed and run like a worker would, so that attempts,
errors and retries are recorded the same way.  A failure is recorded on
its row and logged; it never reaches the caller, whose work is
committed already.
"""
import logging
import os
import threading

from sql import Flavor, Table

from ..transaction import Transaction
from . import store
from .identity import Identity
from .runner import run_batch

__all__ = ['run_after_commit']

logger = logging.getLogger(__name__)

_identities = {}
_lock = threading.Lock()


def _identity(database_name):
    """Return this process's worker identity for the database."""
    key = (os.getpid(), database_name)
    with _lock:
        identity = _identities.get(key)
        if identity is None:
            identity = _identities[key] = Identity(database_name).open()
    return identity


def _forget_after_fork():
    # A child process must not use the connections of its parent.
    _identities.clear()


os.register_at_fork(after_in_child=_forget_after_fork)


def run_after_commit(database_name, task_ids):
    """Run the committed tasks of ids, one transaction each."""
    if not task_ids:
        return
    if Transaction().started:
        logger.debug('inline tasks run inside another transaction')
    identity = _identity(database_name)
    for task_id in task_ids:
        try:
            with _lock:
                tasks = _claim(identity, task_id)
            if tasks:
                run_batch(database_name, identity.id, tasks)
        except Exception:
            logger.critical(
                '%s/%s: the task could not be run', database_name,
                task_id, exc_info=True)


def _claim(identity, task_id):
    """Claim one pending task by its id."""
    Flavor.set(identity.database.flavor)
    queue = Table('ir_queue')
    cursor = identity.connection.cursor()
    cursor.execute(*queue.update(
        [queue.state, queue.attempts, queue.dequeued_at, queue.worker],
        ['running', queue.attempts + 1, store.utcnow(), identity.id],
        where=(queue.id == task_id) & (queue.state == 'pending'),
        returning=store.claimed_columns(queue)))
    return [store.ClaimedTask(*row) for row in cursor]
