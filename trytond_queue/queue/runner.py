"""Running claimed tasks: effects and completion in one transaction.

A batch of claimed tasks runs in one transaction, each task inside a
savepoint: a task that fails is rolled back to its savepoint and its
failure is recorded in the same transaction, so that its neighbours
keep their work and every task's effects commit together with its
completion, or not at all.
"""
import contextlib
import datetime
import logging
import random
import signal
import threading
import time
import traceback as traceback_module

from .. import encoding
from ..config import config
from ..exceptions import (
    ModelError,
    TaskCancelled,
    TasksTakenOver,
    TaskTimeout,
    UserError,
)
from ..pool import Pool
from ..transaction import Transaction
from . import store
from .enqueue import discard_buffer, flush_buffer

__all__ = ['run_batch', 'retry_delay', 'StopRequested']

logger = logging.getLogger(__name__)

# A result larger than this is not kept on the row, to keep the table
# lean; the task still succeeds.
MAX_RESULT_SIZE = 64 * 1024


class StopRequested(BaseException):  # noqa: N818 -- a signal, not an error
    """The worker was told to stop at once: roll back and give back.

    It derives from BaseException so that the ``except Exception`` of a
    task's own code does not swallow it.
    """


def retry_delay(attempts: int) -> float:
    """Return the seconds to wait before the attempt after attempts.

    It doubles from ``[queue] retry_delay`` at each attempt, with a
    random part so that tasks failed together are not retried together,
    and never exceeds ``[queue] retry_max_delay``.
    """
    base = config.getfloat('queue', 'retry_delay', fallback=1) or 0
    ceiling = config.getfloat('queue', 'retry_max_delay', fallback=3600)
    delay = base * 2 ** max(attempts - 1, 0) * random.uniform(0.75, 1.25)
    return min(delay, ceiling or delay)


@contextlib.contextmanager
def time_limit(seconds, label):
    """Raise TaskTimeout in the block once seconds have passed.

    Only the main thread receives signals; elsewhere the statement
    timeout of the database is the only limit.
    """
    if not seconds or threading.current_thread() is not (
            threading.main_thread()):
        yield
        return

    def expire(signum, frame):
        raise TaskTimeout(
            f'The task {label} ran for more than {seconds:g} s and was '
            'stopped: make it faster or raise queue_timeout.')

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def label(database_name, task, data=None):
    """Return the name of the task used in every log line about it."""
    if data is None:
        return f'{database_name}/{task.id}'
    return f'{database_name}/{task.id} {data["model"]}.{data["method"]}'


def call(pool, data, existing=None):
    """Replay the stored call; return what the method returned.

    The method is checked again here: rows can be written by anyone
    with access to the table, not only through ``__queue__``.  existing,
    if given, is the set of the model's ids known to exist.
    """
    model = pool.get(data['model'])
    model.check_method(data['method'])
    instances = data.get('instances')
    transaction = Transaction()
    with transaction.set_user(data.get('user', 0)), \
            transaction.set_context(data.get('context') or {}):
        records = _records(model, instances, existing)
        if records is None:
            return None
        method = getattr(model, data['method'])
        return method(records, *data.get('args', ()),
            **data.get('kwargs', {}))


def _records(model, instances, existing=None):
    """Return the instances that still exist, or None if none does."""
    if instances is None or instances == []:
        return []
    stored = hasattr(model, '__table__')
    ids = instances if isinstance(instances, list) else [instances]
    if stored:
        if existing is None:
            existing = _existing_ids(model, ids)
        ids = [i for i in ids if i in existing]
        if not ids:
            return None
    if isinstance(instances, list):
        return model.browse(ids) if stored else [model(i) for i in ids]
    return model.browse(ids)[0] if stored else model(ids[0])


def _existing_ids(model, ids):
    table = model.__table__()
    cursor = Transaction().connection.cursor()
    cursor.execute(*table.select(table.id, where=table.id.in_(ids)))
    return {id_ for id_, in cursor}


class Monitor:
    """What a supervisor learns of the task being run; here, nothing."""

    def started(self, task):
        """The task is about to run."""

    def finished(self, task):
        """The task has run, whatever the outcome."""

    stopping = False


class _Batch:
    """The tasks of one transaction, decoded, with what they need."""

    def __init__(self, transaction, pool, tasks):
        self.transaction = transaction
        self.pool = pool
        self.calls = []
        ids_by_model = {}
        for task in tasks:
            try:
                data = encoding.loads(task.data)
                name = label(transaction.database.name, task, data)
                ids = data.get('instances')
                ids_by_model.setdefault(data['model'], set()).update(
                    ids if isinstance(ids, list) else [ids])
            except (ValueError, TypeError, KeyError, AttributeError):
                data, name = None, label(transaction.database.name, task)
            self.calls.append((task, data, name))
        self.ids_by_model = ids_by_model
        self.existing = {}
        self.deletions = transaction.deletions

    def begin(self):
        """Open the batch's savepoint, reading what exists on the way.

        Where the driver takes several statements at once, the records
        of the first model are read in the same round trip: it is on
        the path from the commit of a task to its start.
        """
        transaction = self.transaction
        cursor = transaction.connection.cursor()
        model = self._stored_model(next(iter(self.ids_by_model), None))
        ids = self._ids(model)
        if not transaction.database.has_multiple_statements or not ids:
            cursor.execute('SAVEPOINT queue_task')
            return
        table = model.__table__()
        query = table.select(table.id, where=table.id.in_(ids))
        cursor.execute('SAVEPOINT queue_task; ' + str(query), query.params)
        self.existing[model.__name__] = {id_ for id_, in cursor}

    def _stored_model(self, model_name):
        if model_name is None:
            return None
        try:
            model = self.pool.get(model_name)
        except ModelError:
            return None
        return model if hasattr(model, '__table__') else None

    def _ids(self, model):
        if model is None:
            return []
        return [i for i in self.ids_by_model.get(model.__name__, ())
            if isinstance(i, int) and not isinstance(i, bool)]

    def existing_ids(self, model_name):
        """Return the ids of the model that exist, read once per batch.

        A deletion by a task of the batch makes it read them again.
        """
        if self.transaction.deletions != self.deletions:
            self.existing.clear()
            self.deletions = self.transaction.deletions
        existing = self.existing.get(model_name)
        if existing is None:
            model = self._stored_model(model_name)
            if model is None:
                return None
            ids = self._ids(model)
            existing = self.existing[model_name] = _existing_ids(
                model, ids) if ids else set()
        return existing


def run_batch(database_name, worker_id, tasks, monitor=None):
    """Run claimed tasks in one transaction; return (done, failed) counts.

    A connection error or a stop request ends the batch early: the
    transaction rolls back and the caller gives the tasks back.
    """
    monitor = monitor or Monitor()
    pool = Pool(database_name)
    done, failed = [], 0
    with Transaction().start(database_name, 0) as transaction:
        cursor = transaction.connection.cursor()
        batch = _Batch(transaction, pool, tasks)
        batch.begin()
        limited = False
        for index, (task, data, name) in enumerate(batch.calls):
            if monitor.stopping:
                store.release(
                    cursor, [t.id for t in tasks[index:]], worker_id)
                break
            outcome, limited = _run_one(
                batch, task, data, name, monitor, limited)
            if outcome == 'done':
                done.append(task.id)
            elif outcome == 'failed':
                failed += 1
        finished = store.finish(cursor, done, worker_id=worker_id)
        if finished != len(done):
            raise TasksTakenOver(
                f'{len(done) - finished} task(s) of the batch were given '
                'to another worker while they ran.')
    return len(done), failed


def _next_savepoint(database, cursor):
    # One round trip where the driver takes several statements at once.
    if database.has_multiple_statements:
        cursor.execute('RELEASE SAVEPOINT queue_task; SAVEPOINT queue_task')
    else:
        cursor.execute('RELEASE SAVEPOINT queue_task')
        cursor.execute('SAVEPOINT queue_task')


def _run_one(batch, task, data, name, monitor, limited):
    """Run one task in the batch's savepoint; return its outcome."""
    transaction = batch.transaction
    database = transaction.database
    cursor = transaction.connection.cursor()
    start = time.perf_counter()
    monitor.started(task)
    hooks = transaction.hooks_mark()
    try:
        if data is None:
            raise ModelError(
                f'The task {name} holds no valid call: it was not '
                'written by __queue__.')
        logger.debug('%s: start, attempt %d', name, task.attempts)
        limited = _statement_timeout(database, cursor, task.timeout,
            limited)
        with time_limit(task.timeout, name):
            result = call(
                batch.pool, data, batch.existing_ids(data['model']))
        flush_buffer(transaction)
        if result is not None:
            _keep_result(cursor, task, name, result)
        _next_savepoint(database, cursor)
    except StopRequested:
        raise
    except Exception as exception:
        if database.is_connection_error(exception):
            raise
        # The savepoint stays after a rollback to it, ready for the next.
        cursor.execute('ROLLBACK TO SAVEPOINT queue_task')
        transaction.forget_hooks(hooks)
        transaction.cache.clear()
        discard_buffer(transaction)
        outcome = _record_failure(
            cursor, database, task, name, exception, start)
        # The record of the failure is kept out of the savepoint, which
        # the next task could roll back.
        _next_savepoint(database, cursor)
        return outcome, limited
    finally:
        monitor.finished(task)
    logger.info(
        '%s: done in %.1f ms', name, (time.perf_counter() - start) * 1000,
        extra={'task': task.id, 'state': 'done'})
    return 'done', limited


def _statement_timeout(database, cursor, timeout, limited):
    """Bound the task's statements; return whether a bound is in force."""
    if not getattr(database, 'has_statement_timeout', False):
        return False
    if timeout:
        # SET takes no parameters: the value is an integer written here.
        cursor.execute(
            f'SET LOCAL statement_timeout = {max(int(timeout * 1000), 1)}')
        return True
    if limited:
        cursor.execute('SET LOCAL statement_timeout = 0')
    return False


def _keep_result(cursor, task, name, result):
    try:
        text = encoding.dumps(result)
    except encoding.ArgumentEncodingError:
        logger.debug('%s: result is not JSON, not kept', name)
        return
    if len(text) > MAX_RESULT_SIZE:
        logger.debug('%s: result of %d characters not kept', name,
            len(text))
        return
    store.store_result(cursor, task.id, text)


def _record_failure(cursor, database, task, name, exception, start):
    """Record the attempt's error; return 'failed' or 'retried'."""
    duration = (time.perf_counter() - start) * 1000
    if database.is_serialization_failure(exception):
        logger.debug(
            '%s: serialization failure after %.1f ms, retried at once',
            name, duration)
        store.release(cursor, [task.id])
        return 'retried'
    message = f'{type(exception).__name__}: {exception}'
    trace = ''.join(traceback_module.format_exception(exception))
    if isinstance(exception, TaskCancelled):
        store.finish(cursor, [task.id], state='cancelled')
        logger.info('%s: cancelled after %.1f ms', name, duration,
            extra={'task': task.id, 'state': 'cancelled'})
        return 'failed'
    final = (isinstance(exception, UserError)
        or task.attempts >= (task.max_attempts or 1))
    if final:
        store.retry_later(cursor, task, message, trace, None)
        logger.error(
            '%s: failed for good after %d attempt(s) in %.1f ms: %s',
            name, task.attempts, duration, message,
            extra={'task': task.id, 'state': 'failed'})
        return 'failed'
    delay = retry_delay(task.attempts)
    retry_at = store.utcnow() + datetime.timedelta(seconds=delay)
    store.retry_later(cursor, task, message, trace, retry_at)
    logger.debug(
        '%s: attempt %d of %d failed in %.1f ms, retry in %.1f s: %s',
        name, task.attempts, task.max_attempts, duration, delay, message,
        extra={'task': task.id, 'state': 'scheduled'})
    return 'retried'
