"""The statements of the queue engine: claim, finish, retry, rescue.

They run once per batch of tasks, not once per task.  Claims run as
single statements on an autocommit connection, so that the attempt they
count is committed before the task runs: a task that kills its process
still spends it.
"""
import datetime

from sql import Cast, Expression, For, Literal, Table
from sql.aggregate import Min
from sql.conditionals import Case, Coalesce
from sql.functions import Function
from sql.operators import Equal, Exists

__all__ = [
    'utcnow', 'to_datetime', 'ClaimedTask', 'Returned', 'claimed_columns',
    'claim_query', 'claim', 'finish', 'store_result', 'retry_later',
    'release', 'promote', 'next_scheduled_at', 'alive_lock', 'rescue',
    'WORKER_LOCK_CLASS',
    ]

# The first key of the advisory locks that prove a worker is alive; the
# second is the id of its ir_queue_worker row.
WORKER_LOCK_CLASS = 0x7451_7565


def utcnow() -> datetime.datetime:
    """Return the naive UTC time in which the queue keeps its times."""
    return datetime.datetime.now(datetime.timezone.utc).replace(
        tzinfo=None)


def to_datetime(value):
    """Return a datetime from what the driver returned (text on SQLite)."""
    if isinstance(value, str):
        return datetime.datetime.fromisoformat(value)
    return value


class ForSkipLocked(For):
    """FOR UPDATE SKIP LOCKED, which python-sql does not write itself."""

    __slots__ = ()

    def __str__(self):
        return super().__str__() + ' SKIP LOCKED'


class _AnyArray(Function):
    """ANY(ARRAY(subquery)): the subquery runs once, as an init plan."""

    __slots__ = ()
    _function = 'ANY'

    def __init__(self, query):
        super().__init__(_Array(query))


class _Array(Function):
    __slots__ = ()
    _function = 'ARRAY'


def _among(database, column, candidates):
    """Return the condition that column is one of the candidates' ids.

    PostgreSQL may run an IN subquery more than once (as the inner side
    of a nested loop), and each run of a LIMIT ... SKIP LOCKED subquery
    takes other rows: a claim of one task could take hundreds.  Built
    as an array, the subquery runs exactly once.
    """
    if database.has_array:
        return Equal(column, _AnyArray(candidates))
    return column.in_(candidates)


class CurrentDatabase(Function):
    __slots__ = ()
    _function = 'CURRENT_DATABASE'


class ClaimedTask:
    """A task taken by a worker: what it needs to run and to report."""

    __slots__ = (
        'id', 'name', 'data', 'attempts', 'max_attempts', 'timeout',
        'expected_at', 'priority', 'due_at')

    def __init__(self, id, name, data, attempts, max_attempts, timeout,
                 expected_at, priority, due_at):
        self.id = id
        self.name = name
        self.data = data
        self.attempts = attempts
        self.max_attempts = max_attempts
        self.timeout = timeout
        self.expected_at = to_datetime(expected_at)
        self.priority = priority
        self.due_at = to_datetime(due_at)

    def __repr__(self):
        return f'<task {self.id} attempt {self.attempts}>'

    @property
    def order(self):
        """The execution order among claimed tasks."""
        return (self.priority or 0, self.due_at or datetime.datetime.min,
            self.id)


def _queue():
    return Table('ir_queue')


class Returned(Expression):
    """A column of a RETURNING clause, written without its table.

    SQLite refuses the alias that python-sql gives the updated table in
    RETURNING; the bare name means the same on every backend.
    """

    __slots__ = ('name',)

    def __init__(self, name):
        super().__init__()
        self.name = name

    def __str__(self):
        return '"' + self.name.replace('"', '""') + '"'

    @property
    def params(self):
        return ()


def claimed_columns():
    """Return the columns a claim returns, in ClaimedTask's order."""
    return [Returned(name) for name in ClaimedTask.__slots__]


def claim_query(database, worker_id, queues, limit, now=None,
                excluded=()):
    """Return the claim of up to limit tasks (see :func:`claim`)."""
    queue, pending = _queue(), _queue()
    where = pending.state == 'pending'
    if queues:
        where &= pending.name.in_(list(queues))
    if excluded:
        where &= ~pending.name.in_(list(excluded))
    candidates = pending.select(
        pending.id, where=where,
        order_by=[pending.priority.asc, pending.due_at.asc, pending.id.asc],
        limit=limit,
        for_=ForSkipLocked('UPDATE')
        if database.has_select_for_skip_locked else None)
    return queue.update(
        [queue.state, queue.attempts, queue.dequeued_at, queue.worker],
        ['running', queue.attempts + 1, now or utcnow(), worker_id],
        where=_among(database, queue.id, candidates),
        returning=claimed_columns())


def claim(connection, database, worker_id, queues, limit, now=None,
          excluded=()):
    """Take up to limit pending tasks for the worker, in order.

    queues, if any, are the only queues served; excluded queues are
    left to claims of their own (those with a concurrency limit).
    """
    cursor = connection.cursor()
    cursor.execute(*claim_query(
        database, worker_id, queues, limit, now, excluded))
    tasks = [ClaimedTask(*row) for row in cursor]
    tasks.sort(key=lambda t: t.order)
    return tasks


def finish(cursor, ids, now=None, state='done', worker_id=None):
    """Mark the tasks finished (done, or cancelled); return how many.

    With worker_id, only the tasks the worker still runs are finished.
    """
    if not ids:
        return 0
    queue = _queue()
    where = queue.id.in_(list(ids))
    if worker_id is not None:
        where &= (queue.worker == worker_id) & (queue.state == 'running')
    cursor.execute(*queue.update(
        [queue.state, queue.finished_at, queue.worker],
        [state, now or utcnow(), None], where=where))
    return cursor.rowcount


def store_result(cursor, task_id, result):
    """Keep the JSON text of a task's return value."""
    queue = _queue()
    cursor.execute(*queue.update(
        [queue.result], [result], where=queue.id == task_id))


def retry_later(cursor, task, error, traceback, retry_at, now=None,
                rescued=False):
    """Record a failed attempt: retry at retry_at, or fail if None.

    rescued says that the attempt ended with the death of its worker.
    """
    queue = _queue()
    if retry_at is None:
        columns = [queue.state, queue.finished_at]
        values = ['failed', now or utcnow()]
    else:
        columns = [queue.state, queue.scheduled_at, queue.due_at]
        values = [
            'scheduled', retry_at,
            Coalesce(queue.expected_at, retry_at)]
    if rescued:
        columns.append(queue.rescues)
        values.append(Coalesce(queue.rescues, 0) + 1)
    cursor.execute(*queue.update(
        columns + [queue.error, queue.traceback, queue.worker],
        values + [error, traceback, None],
        where=queue.id == task.id))


def release(cursor, ids, worker_id=None, rescued=False):
    """Give running tasks back untouched, refunding their attempt.

    rescued says that their worker died.
    """
    if not ids:
        return
    queue = _queue()
    where = queue.id.in_(list(ids)) & (queue.state == 'running')
    if worker_id is not None:
        where &= queue.worker == worker_id
    columns = [queue.state, queue.attempts, queue.worker]
    values = ['pending', queue.attempts - 1, None]
    if rescued:
        columns.append(queue.rescues)
        values.append(Coalesce(queue.rescues, 0) + 1)
    cursor.execute(*queue.update(columns, values, where=where))


def promote(cursor, database, now=None, limit=1000):
    """Make the scheduled tasks whose time has come pending."""
    queue, scheduled = _queue(), _queue()
    candidates = scheduled.select(
        scheduled.id,
        where=(scheduled.state == 'scheduled')
        & (scheduled.scheduled_at <= (now or utcnow())),
        limit=limit,
        for_=ForSkipLocked('UPDATE')
        if database.has_select_for_skip_locked else None)
    cursor.execute(*queue.update(
        [queue.state], ['pending'],
        where=_among(database, queue.id, candidates)))
    return cursor.rowcount


def next_scheduled_at(cursor):
    """Return when the next scheduled task is due, or None."""
    queue = _queue()
    cursor.execute(*queue.select(
        Min(queue.scheduled_at), where=queue.state == 'scheduled'))
    row = cursor.fetchone()
    return to_datetime(row[0]) if row else None


def _rescued_values(queue, error):
    # Attempts were counted at the claim: a task whose worker died has
    # spent one, and fails once it has spent them all.
    spent = queue.attempts >= queue.max_attempts
    return (
        [queue.state, queue.worker, queue.error, queue.finished_at,
            queue.rescues],
        [Case((spent, 'failed'), else_='pending'), None, error,
            Case((spent, utcnow()), else_=None),
            Coalesce(queue.rescues, 0) + 1])


def alive_lock(worker_id):
    """Return the query of the advisory lock held by a live worker."""
    locks, pg_database = Table('pg_locks'), Table('pg_database')
    return locks.select(
        Literal(1),
        where=(locks.locktype == 'advisory')
        & (locks.classid == WORKER_LOCK_CLASS)
        & (Cast(locks.objid, 'BIGINT') == worker_id)
        & (locks.objsubid == 2) & locks.granted
        & (locks.database == pg_database.select(
            pg_database.oid,
            where=pg_database.datname == CurrentDatabase())))


def rescue(cursor, database, error, dead_workers=None):
    """Give back the running tasks of dead workers; return their ids.

    On PostgreSQL a worker is dead when the advisory lock of its id is
    not held; elsewhere the caller names the dead workers.
    """
    queue, running = _queue(), _queue()
    columns, values = _rescued_values(queue, error)
    if dead_workers is None:
        # A manager that lives gives back its children's tasks itself,
        # knowing which task killed a child.
        worker = Table('ir_queue_worker')
        supervised = worker.select(
            Literal(1),
            where=(worker.id == running.worker)
            & Exists(alive_lock(worker.manager)))
        candidates = running.select(
            running.id,
            where=(running.state == 'running')
            & ~Exists(alive_lock(running.worker)) & ~Exists(supervised),
            for_=ForSkipLocked('UPDATE'))
        where = _among(database, queue.id, candidates)
    else:
        if not dead_workers:
            return []
        where = (queue.state == 'running') & (
            queue.worker.in_(list(dead_workers)))
    cursor.execute(*queue.update(
        columns, values, where=where, returning=[Returned('id')]))
    return [id_ for id_, in cursor]
