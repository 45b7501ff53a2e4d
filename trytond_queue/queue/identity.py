"""Worker identities and the locks that prove they are alive.

Each process that runs tasks of a database registers a row of
``ir_queue_worker`` and, for as long as it lives, holds a lock keyed by
the row's id: a session advisory lock on PostgreSQL, an exclusive
``flock`` of a file beside the database on SQLite.  The operating
system or the server drops the lock when the process or its connection
dies, so a worker is dead exactly when its lock is free, whatever the
clocks say.  Claims record the worker's id on the tasks they take.
"""
import datetime
import fcntl
import logging
import os
import socket

from sql import Flavor, Select, Table
from sql.functions import Function
from sql.operators import Exists

from ..pool import Pool
from ..transaction import Transaction
from . import store
from .runner import retry_delay

__all__ = [
    'Identity', 'rescue_dead_workers', 'give_back', 'mark_seen', 'lock_path']

logger = logging.getLogger(__name__)


class AdvisoryLock(Function):
    __slots__ = ()
    _function = 'PG_ADVISORY_LOCK'


class Identity:
    """A registered worker of one database, alive while it is open."""

    def __init__(self, database_name, queues=(), manager=None):
        self.database_name = database_name
        self.queues = tuple(queues)
        self.manager = manager
        self.id = None
        self.connection = None
        self._lock_file = None

    def __repr__(self):
        return f'<worker {self.id} of {self.database_name}>'

    def open(self):
        """Register the worker and take its lock; return self."""
        with Transaction().start(self.database_name, 0) as transaction:
            Worker = _worker_model(self.database_name)
            worker, = Worker.create([{
                'host': socket.gethostname(),
                'pid': os.getpid(),
                'manager_pid': os.getppid() if self.manager else None,
                'manager': self.manager,
                'queues': ','.join(self.queues),
                'started_at': store.utcnow(),
                }])
            self.id = worker.id
            database = transaction.database
        self.connection = database.connect()
        self.database = database
        database.prepare_for_claims(self.connection)
        if database.has_advisory_lock:
            self.connection.cursor().execute(*database._flavored(Select(
                [AdvisoryLock(store.WORKER_LOCK_CLASS, self.id)])))
        else:
            self._lock_file = open(lock_path(database, self.id), 'a')
            fcntl.flock(self._lock_file, fcntl.LOCK_EX)
        logger.debug('%s: worker %d registered', self.database_name,
            self.id)
        return self

    def close(self, forget=True):
        """Drop the worker's lock and, if forget, its row."""
        if self.connection is None:
            return
        if not forget:
            self._drop()
            return
        try:
            worker = Table('ir_queue_worker')
            cursor = self.connection.cursor()
            cursor.execute(*self.database._flavored(
                worker.delete(where=worker.id == self.id)))
        except Exception:
            logger.debug('%s: worker %s not unregistered',
                self.database_name, self.id, exc_info=True)
        finally:
            self._drop()

    def _drop(self):
        try:
            self.connection.close()
        except Exception:
            logger.debug('closing failed', exc_info=True)
        self.connection = None
        if self._lock_file is not None:
            path = self._lock_file.name
            self._lock_file.close()
            self._lock_file = None
            _remove(path)

    def claim(self, limit, queues=None, excluded=()):
        """Take up to limit pending tasks; return them in order."""
        # The control connection runs outside any transaction, which
        # is what otherwise sets the SQL flavor of the thread.
        Flavor.set(self.database.flavor)
        return store.claim(
            self.connection, self.database, self.id,
            self.queues if queues is None else queues, limit,
            excluded=excluded)


def _worker_model(database_name):
    return Pool(database_name).get('ir.queue.worker')


def lock_path(database, worker_id):
    """Return the lock file of a worker of an SQLite database."""
    directory = database.path + '-workers'
    os.makedirs(directory, exist_ok=True)
    return os.path.join(directory, f'{int(worker_id)}.lock')


def _remove(path):
    try:
        os.remove(path)
    except FileNotFoundError:
        pass


def _is_alive_by_file(database, worker_id):
    path = lock_path(database, worker_id)
    if not os.path.exists(path):
        return False
    with open(path, 'a') as lock_file:
        try:
            fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
    _remove(path)
    return False


def rescue_dead_workers(connection, database):
    """Give back the tasks of dead workers and forget them; return ids.

    connection is an autocommit connection of the database.
    """
    Flavor.set(database.flavor)
    cursor = connection.cursor()
    error = 'The worker running the task died.'
    worker = Table('ir_queue_worker')
    if database.has_advisory_lock:
        ids = store.rescue(cursor, database, error)
        cursor.execute(*database._flavored(worker.delete(
            where=~Exists(store.alive_lock(worker.id))
            & ~Exists(store.alive_lock(worker.manager)))))
    else:
        queue = Table('ir_queue')
        cursor.execute(*database._flavored(queue.select(
            queue.worker, where=queue.state == 'running',
            group_by=[queue.worker])))
        running = {w for w, in cursor}
        cursor.execute(*database._flavored(
            worker.select(worker.id, worker.manager)))
        managers = dict(cursor.fetchall())
        # A manager that lives gives back its children's tasks itself.
        dead = [w for w in running | set(managers)
            if w is None or not (
                _is_alive_by_file(database, w)
                or managers.get(w) and _is_alive_by_file(
                    database, managers[w]))]
        ids = store.rescue(cursor, database, error, dead_workers=dead)
        dead_rows = [w for w in dead if w is not None]
        if dead_rows:
            cursor.execute(*database._flavored(worker.delete(
                where=worker.id.in_(dead_rows))))
    if ids:
        logger.warning(
            '%s: %d task(s) of dead workers given back: %s',
            database.name, len(ids), ids[:20])
    return ids


def give_back(connection, database, worker_id, culprit=None, error=None):
    """Give back the running tasks of a worker that its manager saw die.

    The task it was running (culprit) keeps the attempt it spent and is
    retried later, or fails if it has spent them all; the others were
    never started and get their attempt back.
    """
    Flavor.set(database.flavor)
    cursor = connection.cursor()
    queue = Table('ir_queue')
    if culprit:
        cursor.execute(*queue.select(
            *store.claimed_columns(),
            where=(queue.id == culprit) & (queue.worker == worker_id)
            & (queue.state == 'running')))
        for row in cursor.fetchall():
            task = store.ClaimedTask(*row)
            final = task.attempts >= (task.max_attempts or 1)
            retry_at = None if final else store.utcnow() + (
                datetime.timedelta(seconds=retry_delay(task.attempts)))
            store.retry_later(
                cursor, task, error, '', retry_at, rescued=True)
            log = logger.error if final else logger.warning
            log('%s/%s: %s', database.name, task.id, error,
                extra={'task': task.id,
                    'state': 'failed' if final else 'scheduled'})
    cursor.execute(*queue.select(
        queue.id,
        where=(queue.worker == worker_id) & (queue.state == 'running')))
    store.release(
        cursor, [i for i, in cursor.fetchall()], worker_id,
        rescued=culprit is not None)
    worker = Table('ir_queue_worker')
    cursor.execute(*worker.delete(where=worker.id == worker_id))


def mark_seen(connection, database, manager_id):
    """Mark a manager and its processes as seen now."""
    Flavor.set(database.flavor)
    worker = Table('ir_queue_worker')
    connection.cursor().execute(*worker.update(
        [worker.last_seen], [store.utcnow()],
        where=(worker.id == manager_id) | (worker.manager == manager_id)))
