"""Look after the tasks: what the command line and the dashboard share.

Functions that read figures take the cursor of their caller's
transaction, so that a page reads all of them in one snapshot.  Those
that change tasks work in the current transaction, so that they can be
given to :func:`run_in_transaction` or :func:`run_change`.  Times are
naive UTC, as the queue keeps them.
"""
import datetime
import fcntl

from sql import Literal, Null, Table
from sql.aggregate import Count, Max, Min, Sum
from sql.conditionals import Case, Coalesce
from sql.operators import Exists

from .. import backend
from ..pool import Pool
from ..transaction import Transaction, run_in_transaction
from . import identity, store
from .model import FINAL_STATES, STATES, WAITING_STATES
from .notify import CANCEL_CHANNEL, notify

__all__ = [
    'RETRYABLE_STATES', 'WHY_NOT_RETRIED', 'WHY_NOT_CANCELLED',
    'queue_figures', 'total_figures', 'read_task', 'retry_tasks',
    'count_failed', 'retry_failed', 'cancel_tasks', 'count_finished',
    'delete_finished', 'workers', 'run_change',
    ]

RETRYABLE_STATES = ('failed', 'cancelled', 'scheduled')
# Why a task in a state is left unchanged, to end "Task 7 ...".  A
# failed, cancelled or scheduled task is retried unless the unique index
# forbids it.
WHY_NOT_RETRIED = dict(
    dict.fromkeys(
        RETRYABLE_STATES,
        'was left as it is: a waiting task has the same unique key'),
    running='is running: it can be retried once it has failed',
    done='is done: a finished task does not run again, queue a new one')
WHY_NOT_CANCELLED = {
    'running': 'is running, and only PostgreSQL can stop a running task',
    'done': 'is done: there is nothing left to cancel',
    'failed': 'has failed: it will not run again unless retried',
    }
WORKER_COLUMNS = (
    'id', 'host', 'pid', 'manager_pid', 'manager', 'queues', 'started_at',
    'last_seen', 'running')


def queue_figures(cursor, now: datetime.datetime) -> list[dict]:
    """Return the counts by state and the delays of each queue, by name."""
    queue = Table('ir_queue')
    active = queue.state.in_(list(WAITING_STATES) + ['running'])
    counts = [
        Sum(Case((queue.state == s, 1), else_=0)) for s in STATES]
    cursor.execute(*queue.select(
        queue.name, *counts,
        Min(Case((queue.state == 'pending',
            Coalesce(queue.scheduled_at, queue.enqueued_at)))),
        Sum(Case((active & (queue.expected_at < now), 1), else_=0)),
        Sum(Case(((queue.state == 'done')
            & (queue.finished_at > queue.expected_at), 1), else_=0)),
        Sum(Case((queue.attempts > 1, queue.attempts - 1), else_=0)),
        Sum(Coalesce(queue.rescues, 0)),
        group_by=[queue.name], order_by=[queue.name.asc]))
    figures = []
    for (name, *states, waiting_since, overdue, late, retried,
            rescued) in cursor:
        waiting_since = store.to_datetime(waiting_since)
        figure = {'queue': name}
        figure.update(zip(STATES, map(int, states)))
        figure['oldest_pending_age'] = (
            (now - waiting_since).total_seconds() if waiting_since else None)
        figure.update(
            overdue=int(overdue), late=int(late), retried=int(retried),
            rescued=int(rescued))
        figures.append(figure)
    return figures


def total_figures(figures: list[dict]) -> dict:
    """Return the figures of every queue together, named 'total'."""
    total = {'queue': 'total'}
    for key in STATES + ('overdue', 'late', 'retried', 'rescued'):
        total[key] = sum(f[key] for f in figures)
    ages = [f['oldest_pending_age'] for f in figures
        if f['oldest_pending_age'] is not None]
    total['oldest_pending_age'] = max(ages, default=None)
    return total


def read_task(task_id: int) -> dict | None:
    """Return every field of the task, its call in 'data', or None."""
    Queue = Pool().get('ir.queue')
    if not Queue.search_count([('id', '=', task_id)]):
        return None
    task, = Queue.read([task_id])
    return task


def _states(cursor, ids):
    queue = Table('ir_queue')
    cursor.execute(*queue.select(
        queue.id, queue.state, where=queue.id.in_(list(ids))))
    return dict(cursor)


def _retry_query(selection, now):
    """Return the update that makes the selected tasks pending again.

    A unique task is left as it is when a waiting task has its key, or
    when a selected twin of lower id is retried with it: the unique index
    allows one waiting copy only.
    """
    queue, waiting, selected = (
        Table('ir_queue'), Table('ir_queue'), Table('ir_queue'))
    # Both subqueries are read once, not once per row as a subquery
    # tied to the row would be: that takes minutes for some ten
    # thousand failed tasks.  The unique index keeps one waiting task
    # per key, so a waiting task is the one of its key.
    waiting_keys = waiting.select(
        waiting.unique_key,
        where=waiting.state.in_(list(WAITING_STATES))
        & (waiting.unique_key != Null))
    first_of_key = selected.select(
        Min(selected.id),
        where=selection(selected) & (selected.unique_key != Null),
        group_by=[selected.unique_key])
    alone = (queue.state.in_(list(WAITING_STATES))
        | ~queue.unique_key.in_(waiting_keys))
    return queue.update(
        [queue.state, queue.attempts, queue.scheduled_at,
            queue.finished_at, queue.due_at, queue.worker],
        ['pending', 0, None, None, Coalesce(queue.expected_at, now), None],
        where=selection(queue) & ((queue.unique_key == Null)
            | (queue.id.in_(first_of_key) & alone)))


def retry_tasks(ids: list[int]) -> tuple[dict, dict]:
    """Make the retryable tasks pending; return their states before, after.

    The states are {id: state} of the tasks that exist.
    """
    def selection(table):
        return table.id.in_(ids) & table.state.in_(list(RETRYABLE_STATES))
    cursor = Transaction().connection.cursor()
    before = _states(cursor, ids)
    cursor.execute(*_retry_query(selection, store.utcnow()))
    after = _states(cursor, ids)
    return before, after


def _failed(table, queue_name):
    where = table.state == 'failed'
    if queue_name:
        where &= table.name == queue_name
    return where


def count_failed(queue_name: str | None = None) -> int:
    """Return the number of failed tasks, of one queue or of all."""
    queue = Table('ir_queue')
    cursor = Transaction().connection.cursor()
    cursor.execute(*queue.select(
        Count(Literal('*')), where=_failed(queue, queue_name)))
    return cursor.fetchone()[0]


def retry_failed(
        queue_name: str | None = None, after: int = 0,
        limit: int | None = None) -> tuple[int, int, int | None]:
    """Make failed tasks pending; return (retried, left, last id taken).

    The tasks are those of id above after, the first limit of them when
    limit is given, so that a caller can go through many in
    transactions of their own by passing the last id back as after.
    Left counts the tasks taken but left failed for their unique key,
    as retry_tasks leaves them; the last id is None when none was taken.
    """
    queue = Table('ir_queue')
    cursor = Transaction().connection.cursor()
    where = _failed(queue, queue_name) & (queue.id > after)
    if limit is None:
        taken = queue.select(queue.id, where=where)
    else:
        taken = queue.select(
            queue.id, where=where, order_by=[queue.id.asc], limit=limit)
    cursor.execute(*taken.select(Count(Literal('*')), Max(taken.id)))
    count, last = cursor.fetchone()
    if not count:
        return 0, 0, None

    def selection(table):
        return (_failed(table, queue_name)
            & (table.id > after) & (table.id <= last))
    cursor.execute(*_retry_query(selection, store.utcnow()))
    # The transaction reads one snapshot, so the tasks counted and not
    # updated are exactly those the unique guard left.
    return cursor.rowcount, count - cursor.rowcount, last


def cancel_tasks(ids: list[int]) -> tuple[dict, set, list]:
    """Cancel the waiting tasks and ask the managers to stop running ones.

    Return the states before ({id: state} of the tasks that exist), the
    ids cancelled and the ids of the running tasks whose manager was
    asked, at commit, to stop them (only PostgreSQL can).
    """
    transaction = Transaction()
    cursor = transaction.connection.cursor()
    before = _states(cursor, ids)
    # The states read stay true until the commit: SQLite lets one
    # writer at a time, and on PostgreSQL a worker that claims one of
    # the tasks meanwhile makes the update a serialization failure, so
    # that the transaction runs again.
    waiting = [i for i in ids if before.get(i) in WAITING_STATES]
    store.finish(cursor, waiting, state='cancelled')
    running = [i for i in ids if before.get(i) == 'running']
    if not transaction.database.has_channel:
        return before, set(waiting), []
    # The row of a running task is locked by its run: its manager learns
    # of the request at commit and stops the task.
    for task_id in running:
        notify(transaction, str(task_id), channel=CANCEL_CHANNEL)
    return before, set(waiting), running


def _finished_before(table, cutoff):
    return (table.state.in_(list(FINAL_STATES))
        & (table.finished_at < cutoff))


def count_finished(cutoff: datetime.datetime) -> int:
    """Return the number of tasks finished before the cutoff."""
    queue = Table('ir_queue')
    cursor = Transaction().connection.cursor()
    cursor.execute(*queue.select(
        Count(Literal('*')), where=_finished_before(queue, cutoff)))
    return cursor.fetchone()[0]


def delete_finished(cutoff: datetime.datetime, limit: int) -> int:
    """Delete up to limit tasks finished before the cutoff; return how many.

    A small limit keeps each transaction short when many tasks go.
    """
    queue, finished = Table('ir_queue'), Table('ir_queue')
    cursor = Transaction().connection.cursor()
    cursor.execute(*queue.delete(where=queue.id.in_(finished.select(
        finished.id, where=_finished_before(finished, cutoff),
        limit=limit))))
    return cursor.rowcount


def _lock_held(database, worker_id):
    # Unlike the rescue, this only looks: it neither keeps the lock nor
    # removes the file, so that it cannot race a worker taking it.
    path = identity.lock_path(database, worker_id)
    try:
        lock_file = open(path)
    except FileNotFoundError:
        return False
    with lock_file:
        try:
            fcntl.flock(lock_file, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(lock_file, fcntl.LOCK_UN)
    return False


def _running_task(worker):
    """Return the query of the task a worker runs, its first claimed."""
    queue = Table('ir_queue')
    return queue.select(
        Min(queue.id),
        where=(queue.worker == worker.id) & (queue.state == 'running'))


def workers(cursor, database) -> list[dict]:
    """Return the registered workers and managers, each with whether alive.

    A worker is alive while it holds its lock, whatever its row says:
    the row of a dead one stays until the next rescue removes it.
    """
    worker = Table('ir_queue_worker')
    columns = [getattr(worker, c) for c in WORKER_COLUMNS[:-1]]
    columns.append(_running_task(worker))
    if database.has_advisory_lock:
        columns.append(Exists(store.alive_lock(worker.id)))
    cursor.execute(*worker.select(*columns, order_by=[worker.id.asc]))
    rows = []
    for values in cursor:
        row = dict(zip(WORKER_COLUMNS, values))
        if database.has_advisory_lock:
            row['alive'] = bool(values[-1])
        else:
            row['alive'] = _lock_held(database, row['id'])
        for name in ('started_at', 'last_seen'):
            row[name] = store.to_datetime(row[name])
        rows.append(row)
    return rows


def run_change(database_name: str, function, *args):
    """Call function in a transaction of its own; None on a unique conflict.

    The conflict is a unique task queued after the transaction began: it
    escapes the guard of the retry, and the unique index refuses its
    twin.  Running the change again sees it.
    """
    try:
        return run_in_transaction(database_name, 0, function, *args)
    except Exception as exception:
        if not backend.Database(database_name).is_integrity_error(
                exception):
            raise
        return None
