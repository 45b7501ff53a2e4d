"""Running tasks right after the enqueuing transaction commits.

With ``[queue] worker = False`` nobody else runs the tasks: once the
caller's transaction has committed, its tasks run here, in enqueue
order, each claimed and run like a worker would, so that attempts,
errors and retries are recorded the same way.  A failure is recorded on
its row and logged; it never reaches the caller, whose work is
committed already.
"""
import collections
import contextlib
import logging
import os
import threading

from sql import Flavor, Table

from ..config import config
from ..transaction import Transaction
from . import store
from .identity import Identity, rescue_dead_workers
from .runner import run_batch

__all__ = ['run_after_commit']

logger = logging.getLogger(__name__)

_identities = {}
# Guards the cache of identities and their connections, which the
# threads of a process share.
_lock = threading.RLock()
_local = threading.local()


def _identity(database_name):
    """Return this process's worker identity for the database."""
    key = (os.getpid(), database_name)
    with _lock:
        identity = _identities.get(key)
        if identity is None:
            identity = _identities[key] = Identity(database_name).open()
    return identity


def _discard(identity):
    """Close an identity whose connection failed; the next use reopens."""
    with _lock:
        key = (os.getpid(), identity.database_name)
        if _identities.get(key) is identity:
            del _identities[key]
    try:
        identity.close()
    except Exception:
        logger.debug('closing %r failed', identity, exc_info=True)


def _forget_after_fork():
    # A child process must not use the connections of its parent.
    _identities.clear()


os.register_at_fork(after_in_child=_forget_after_fork)


def run_after_commit(database_name, task_ids):
    """Run the committed tasks of ids, one transaction each."""
    if not task_ids:
        return
    waiting = getattr(_local, 'waiting', None)
    if waiting is not None:
        # The tasks were queued by a task running here: they wait for
        # those queued before them, and the stack does not grow with a
        # chain of tasks that queue the next.
        waiting.extend((database_name, i) for i in task_ids)
        return
    if Transaction().started:
        logger.debug(
            '%s: inline tasks run inside another transaction',
            database_name)
    _local.waiting = waiting = collections.deque(
        (database_name, i) for i in task_ids)
    try:
        while waiting:
            _run(*waiting.popleft())
    finally:
        _local.waiting = None


def _run(database_name, task_id):
    """Claim and run one task; log whatever goes wrong.

    A task given back after a serialization failure is pending again:
    it is claimed and run again at once, a few times at most.
    """
    retries = config.getint('database', 'retry', fallback=5) or 0
    for _ in range(retries + 1):
        try:
            identity, tasks = _claim_fresh(database_name, task_id)
        except Exception:
            logger.critical(
                '%s/%s: the task could not be claimed; it stays for a '
                'worker or "trytond-queue run"', database_name, task_id,
                exc_info=True)
            return
        if not tasks:
            # Rolled back with a task that failed, or done, or waiting
            # for a retry later.
            return
        try:
            run_batch(database_name, identity.id, tasks)
        except Exception:
            logger.critical(
                '%s/%s: the task could not be run; it is given back',
                database_name, task_id, exc_info=True)
            _give_back(identity, tasks)
            return


def _claim_fresh(database_name, task_id):
    """Return the identity and the claimed task, reconnecting once."""
    # The identity's connection lives as long as the process, so it is
    # the one to lose when the server restarts or ends idle sessions.
    for retry in (True, False):
        identity = _identity(database_name)
        try:
            return identity, _claim(identity, task_id)
        except Exception as exception:
            _discard(identity)
            if not (retry and identity.database.is_connection_error(
                    exception)):
                raise
            logger.warning(
                '%s: the connection of the inline runner was lost, '
                'reconnecting', database_name)


@contextlib.contextmanager
def _cursor(identity):
    """Yield a cursor of the identity's connection, SQL flavor set."""
    # The connection serves outside any transaction, which is what
    # otherwise sets the flavor of the thread.
    with _lock:
        previous = Flavor.get()
        Flavor.set(identity.database.flavor)
        try:
            yield identity.connection.cursor()
        finally:
            Flavor.set(previous)


def _claim(identity, task_id):
    """Claim one pending task by its id."""
    queue = Table('ir_queue')
    with _cursor(identity) as cursor:
        cursor.execute(*queue.update(
            [queue.state, queue.attempts, queue.dequeued_at, queue.worker],
            ['running', queue.attempts + 1, store.utcnow(), identity.id],
            where=(queue.id == task_id) & (queue.state == 'pending'),
            returning=store.claimed_columns()))
        return [store.ClaimedTask(*row) for row in cursor]


def _give_back(identity, tasks):
    """Make tasks whose run broke down pending again, untouched."""
    # While this process lives its identity is alive, so no rescue
    # would ever take the tasks back from it.
    try:
        with _cursor(identity) as cursor:
            store.release(cursor, [t.id for t in tasks], identity.id)
    except Exception:
        logger.critical(
            '%s: tasks %s could not be given back', identity.database_name,
            [t.id for t in tasks], exc_info=True)
        _discard(identity)


def run_due(database_name, batch_size=50):
    """Run here, in turn, every task due now; return (done, failed).

    It serves setups without workers, from cron for instance: the
    retries of failed tasks and the scheduled tasks run at commit
    nowhere else.  Tasks scheduled later are left for a later call.
    """
    identity = _identity(database_name)
    # Tasks left running by processes that died, at commit for instance,
    # have nobody else to give them back without workers.
    rescue_dead_workers(identity.connection, identity.database)
    done = failed = 0
    while True:
        with _cursor(identity) as cursor:
            store.promote(cursor, identity.database)
        with _lock:
            Flavor.set(identity.database.flavor)
            tasks = identity.claim(batch_size)
        if not tasks:
            return done, failed
        try:
            batch_done, batch_failed = run_batch(
                database_name, identity.id, tasks)
        except Exception:
            _give_back(identity, tasks)
            raise
        done += batch_done
        failed += batch_failed
