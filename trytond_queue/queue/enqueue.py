"""Queuing calls: ``cls.__queue__.method(records, *args, **kwargs)``.

The call becomes a row of ``ir_queue`` in the caller's transaction.  Where
the backend has sequences, the rows are kept in a buffer of the
transaction with ids reserved from the sequence, and written by one
statement just before the commit (or before the queue is read), so that
a loop of calls costs one round trip per few hundred tasks.
"""
import datetime
import functools
import hashlib
import json
import math
import re

from sql import Conflict, Flavor, Table

from .. import encoding
from ..config import config
from ..exceptions import QueueError
from ..transaction import Transaction
from . import store
from .model import WAITING_STATES
from .notify import notify, notify_query

__all__ = ['QueueCaller', 'enqueue', 'flush_buffer', 'discard_buffer']

QUEUE_NAME = re.compile(r'[A-Za-z0-9_.-]{1,64}')
# The bounds of the INTEGER columns, checked at the call rather than
# found out by the database at the commit.
MIN_INTEGER, MAX_INTEGER = -2 ** 31, 2 ** 31 - 1
# Context keys that configure the queuing itself; they are not stored.
QUEUE_KEYS = frozenset({
    'queue_name', 'queue_scheduled_at', 'queue_expected_at', 'queue_batch',
    'queue_priority', 'queue_unique', 'queue_max_attempts',
    'queue_timeout', '_check_access',
    })
COLUMNS = (
    'id', 'name', 'model', 'method', 'data', 'state', 'priority',
    'enqueued_at', 'scheduled_at', 'expected_at', 'due_at', 'attempts',
    'max_attempts', 'timeout', 'unique_key',
    )
BUFFER_KEY = 'ir.queue.buffer'
PREPARED_KEY = 'ir.queue.prepared'
DEFAULTS_KEY = 'ir.queue.defaults'
# Rows per INSERT when the buffer is written.
FLUSH_CHUNK = 1000


class QueueCaller:
    """The object behind ``__queue__``: any method name queues a call."""

    # Private names, so that no public method of a model is hidden.
    __slots__ = ('_model', '_instance')

    def __init__(self, model, instance=None):
        self._model = model
        self._instance = instance

    def __getattr__(self, method_name):
        if method_name.startswith('__') and method_name.endswith('__'):
            # Python's own protocols (copy, pickle, inspect) probe these
            # and expect an AttributeError for those missing.
            raise AttributeError(method_name)
        model, instance = self._model, self._instance
        model.check_method(method_name)

        def queue_call(*args, **kwargs):
            if instance is not None:
                return enqueue(model, method_name, instance, args, kwargs)
            if not args:
                raise QueueError(
                    f'__queue__.{method_name}() needs the records of '
                    f'{model.__name__!r} as its first argument.')
            return enqueue(model, method_name, args[0], args[1:], kwargs)
        return queue_call


class _Buffer:
    """The rows queued in one transaction and not yet written."""

    __slots__ = (
        'rows', 'reserved', 'notify', 'inline_ids', 'hooked', 'first')

    def __init__(self):
        self.rows = []
        self.reserved = []
        # Whether the workers still need a notification at commit.
        self.notify = False
        self.inline_ids = []
        self.hooked = False
        self.first = True


def _instance_ids(model, instances):
    """Return (ids, single) of records or ids of the model."""
    single = not isinstance(instances, (list, tuple))
    items = [instances] if single else instances
    ids = []
    for item in items:
        if isinstance(item, int) and not isinstance(item, bool):
            ids.append(item)
        elif getattr(item, '__name__', None) == model.__name__ and (
                getattr(item, 'id', None) is not None):
            ids.append(int(item.id))
        else:
            raise QueueError(
                f'__queue__ of {model.__name__!r} takes saved records of '
                f'that model or their ids, not {item!r:.60}.')
    return ids, single


def _delta(context, key, now):
    value = context.get(key)
    if value is None:
        return None
    if isinstance(value, datetime.timedelta):
        return now + value
    if isinstance(value, datetime.datetime):
        return value
    raise QueueError(
        f'The context key {key!r} takes a timedelta from now, not '
        f'{value!r:.60}.')


def _integer(context, key, default, minimum):
    value = context.get(key, default)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not (
            minimum <= value <= MAX_INTEGER):
        raise QueueError(
            f'The context key {key!r} takes an integer from {minimum} '
            f'to {MAX_INTEGER}, not {value!r:.60}.')
    return value


def _defaults(transaction):
    """Return the configured options of tasks, read once a transaction."""
    # Reading the configuration costs more than the rest of a call.
    defaults = transaction.storage.get(DEFAULTS_KEY)
    if defaults is None:
        defaults = transaction.storage[DEFAULTS_KEY] = {
            'queue_timeout': config.getfloat(
                'queue', 'timeout', fallback=None),
            'queue_max_attempts': config.getint(
                'queue', 'max_attempts', fallback=5),
            }
    return defaults


class _Prepared:
    """What the transaction's context sets for every call it queues."""

    __slots__ = ('context', 'stored_context', 'options', 'timed', 'unique')

    def __init__(self, transaction):
        context = self.context = transaction.context
        self.stored_context = {
            k: v for k, v in context.items() if k not in QUEUE_KEYS}
        for key, value in self.stored_context.items():
            encoding.check(f'context[{key!r}]', value)
        self.options = _options(context, _defaults(transaction))
        self.timed = (
            context.get('queue_scheduled_at') is not None
            or context.get('queue_expected_at') is not None)
        self.unique = bool(context.get('queue_unique'))


def _prepared(transaction):
    """Return what the context sets, read again when it changes."""
    prepared = transaction.storage.get(PREPARED_KEY)
    # The context is replaced, never changed in place, by set_context.
    if prepared is None or prepared.context is not transaction.context:
        prepared = transaction.storage[PREPARED_KEY] = _Prepared(
            transaction)
    return prepared


def _options(context, defaults):
    """Return the row values that the context sets, but for its times.

    The times are relative to each call: the caller adds them.
    """
    name = context.get('queue_name')
    if name is None:
        name = 'default'
    if not isinstance(name, str) or not QUEUE_NAME.fullmatch(name):
        raise QueueError(
            f'The queue name {name!r} is not valid: use 1 to 64 letters, '
            'digits, "_", "-" or ".".')
    timeout = context.get('queue_timeout', defaults['queue_timeout'])
    if timeout is not None and (
            isinstance(timeout, bool)
            or not isinstance(timeout, (int, float))
            or not 0 < timeout < math.inf):
        raise QueueError(
            f'The context key queue_timeout takes a positive number of '
            f'seconds, not {timeout!r:.60}.')
    return {
        'name': name,
        'scheduled_at': None,
        'expected_at': None,
        'priority': _integer(
            context, 'queue_priority', 0, MIN_INTEGER),
        'max_attempts': _integer(
            context, 'queue_max_attempts',
            defaults['queue_max_attempts'], 1),
        'timeout': timeout,
    }


def _batches(context, ids):
    batch = context.get('queue_batch')
    if not batch:
        return [ids]
    if batch is True:
        size = config.getint('queue', 'batch_size', fallback=20) or 20
    else:
        size = _integer(context, 'queue_batch', None, 1)
    return [ids[i:i + size] for i in range(0, len(ids), size)] or [[]]


def _encode_call(call, method, args, kwargs):
    """Return the JSON text of the call, naming the argument refused.

    The context was checked when the transaction's options were read,
    and the rest of the call is built here: only the arguments may hold
    keys that JSON would change.
    """
    try:
        text = encoding.encode(call)
        if kwargs or not encoding.SCALAR_TYPES.issuperset(map(type, args)):
            encoding.check_keys([args, kwargs])
        return text
    except encoding.ArgumentEncodingError:
        for index, value in enumerate(args):
            encoding.check(f'{index + 1} of {method}()', value)
        for key, value in kwargs.items():
            encoding.check(f'{key!r} of {method}()', value)
        for key, value in call['context'].items():
            encoding.check(f'context[{key!r}]', value)
        raise


def enqueue(model, method, instances, args, kwargs):
    """Queue a call of model.method; return the task id(s).

    One record gives one task id; a list of records gives a list of ids,
    one per batch of ``queue_batch`` records (one batch by default).
    """
    transaction = Transaction()
    if not transaction.started:
        raise QueueError(
            'Tasks are queued inside a transaction: use '
            'Transaction().start(...) first.')
    if transaction.readonly:
        raise QueueError(
            'Tasks cannot be queued in a read-only transaction: start '
            'the transaction with readonly=False.')
    context = transaction.context
    ids, single = _instance_ids(model, instances)
    now = store.utcnow()
    prepared = _prepared(transaction)
    options = dict(prepared.options)
    if prepared.timed:
        options['scheduled_at'] = _delta(context, 'queue_scheduled_at', now)
        options['expected_at'] = _delta(context, 'queue_expected_at', now)
    unique = prepared.unique
    call = {
        'model': model.__name__, 'method': method,
        'user': transaction.user,
        'context': prepared.stored_context,
        'args': list(args), 'kwargs': kwargs,
        }
    task_ids = []
    for chunk in _batches(context, ids):
        call['instances'] = chunk[0] if single else chunk
        data = _encode_call(call, method, args, kwargs)
        row = _row(options, model.__name__, method, data, now)
        if unique:
            row['unique_key'] = _unique_key(options['name'], call)
        task_ids.append(_add(transaction, row, unique))
    return task_ids[0] if single else task_ids


def _row(options, model_name, method, data, now):
    scheduled_at = options['scheduled_at']
    waiting = scheduled_at is not None and scheduled_at > now
    ready_at = scheduled_at if waiting else now
    return {
        'name': options['name'],
        'model': model_name,
        'method': method,
        'data': data,
        'state': 'scheduled' if waiting else 'pending',
        'priority': options['priority'],
        'enqueued_at': now,
        'scheduled_at': scheduled_at,
        'expected_at': options['expected_at'],
        'due_at': options['expected_at'] or ready_at,
        'attempts': 0,
        'max_attempts': options['max_attempts'],
        'timeout': options['timeout'],
        'unique_key': None,
        }


def _unique_key(queue_name, call):
    identity = [
        queue_name, call['model'], call['method'], call['instances'],
        call['args'], call['kwargs']]
    text = json.dumps(
        identity, sort_keys=True, default=encoding._encode,
        separators=(',', ':'))
    return hashlib.sha256(text.encode('utf-8')).hexdigest()


def _buffer(transaction):
    buffer = transaction.storage.get(BUFFER_KEY)
    if buffer is None:
        buffer = transaction.storage[BUFFER_KEY] = _Buffer()
        if not config.getboolean('queue', 'worker', fallback=False):
            from .inline import run_after_commit
            transaction.after_commit(
                run_after_commit, transaction.database.name,
                buffer.inline_ids)
    if not buffer.hooked:
        # Hooked again when another hook of the commit queues a task
        # after the flush, which would otherwise never be written.
        transaction.before_commit(_before_commit, transaction, buffer)
        buffer.hooked = True
    return buffer


def _add(transaction, row, unique):
    database = transaction.database
    buffer = _buffer(transaction)
    first, buffer.first = buffer.first, False
    if (first and not unique and database.has_sequence
            and database.has_multiple_statements):
        # The first task of a transaction is written at once, with the
        # notification of the workers, in one round trip: a transaction
        # that queues one task costs no more than one insert.
        task_id = _insert_first(transaction, row)
    else:
        buffer.notify = True
        if database.has_sequence:
            # Every later task takes its id from a reserve, unique ones
            # too, so that ids follow the order of the calls.
            row['id'] = _reserved_id(transaction, buffer)
        if unique:
            flush_buffer(transaction)
            task_id = _insert_unique(transaction, row)
        elif 'id' in row:
            task_id = row['id']
            buffer.rows.append(row)
        else:
            task_id = _insert(transaction, [row])[0]
    buffer.inline_ids.append(task_id)
    return task_id


def _reserved_id(transaction, buffer):
    if not buffer.reserved:
        # Reserve more ids each time, so that a loop of calls costs few
        # round trips.
        count = min(max(len(buffer.rows), 1), FLUSH_CHUNK)
        buffer.reserved = transaction.database.next_ids(
            transaction.connection, Table('ir_queue'), count)[::-1]
    return buffer.reserved.pop()


@functools.lru_cache(maxsize=4)
def _first_statement(paramstyle):
    """Return the SQL that notifies the workers and inserts one task.

    It is rendered once: python-sql would otherwise take longer to
    write it than the server to run it.
    """
    table = Table('ir_queue')
    notification = notify_query()
    insert = table.insert(
        [getattr(table, c) for c in COLUMNS[1:]], [[None] * len(COLUMNS[1:])],
        returning=[store.Returned('id')])
    # The driver returns the result of the last statement: the id.
    return (str(notification) + '; ' + str(insert),
        tuple(notification.params))


def _insert_first(transaction, row):
    """Insert the row and notify the workers; return the row's id."""
    statement, notify_params = _first_statement(Flavor.get().paramstyle)
    cursor = transaction.connection.cursor()
    cursor.execute(
        statement, notify_params + tuple(row[c] for c in COLUMNS[1:]))
    return cursor.fetchone()[0]


def _insert(transaction, rows):
    table = Table('ir_queue')
    cursor = transaction.connection.cursor()
    names = [c for c in COLUMNS if c != 'id' or 'id' in rows[0]]
    columns = [getattr(table, c) for c in names]
    database = transaction.database
    if 'id' in rows[0] and database.has_copy:
        database.copy_rows(
            transaction.connection, 'ir_queue', names,
            [[row[c] for c in names] for row in rows])
        return [row['id'] for row in rows]
    if 'id' in rows[0]:
        cursor.execute(*table.insert(
            columns, [[row[c] for c in names] for row in rows]))
        return [row['id'] for row in rows]
    ids = []
    for row in rows:
        cursor.execute(*table.insert(columns, [[row[c] for c in names]]))
        ids.append(cursor.lastrowid)
    return ids


def _insert_unique(transaction, row):
    """Insert the row unless a waiting twin exists; return the id."""
    table = Table('ir_queue')
    cursor = transaction.connection.cursor()
    names = [c for c in COLUMNS if c != 'id' or 'id' in row]
    # Without a conflict target, DO NOTHING covers the partial unique
    # index of waiting tasks, which SQLite cannot match against a
    # predicate whose constants are parameters.
    cursor.execute(*table.insert(
        [getattr(table, c) for c in names], [[row[c] for c in names]],
        on_conflict=Conflict(table),
        returning=[store.Returned('id')]))
    inserted = cursor.fetchone()
    if inserted:
        return inserted[0]
    # The twin is visible here: PostgreSQL reports a conflict with a row
    # this snapshot cannot see as a serialization failure instead.
    cursor.execute(*table.select(
        table.id,
        where=(table.unique_key == row['unique_key'])
        & table.state.in_(list(WAITING_STATES))))
    existing = cursor.fetchone()
    if existing:
        return existing[0]
    raise QueueError(
        'A unique task changed state while it was queued: queue it '
        'again.')


def flush_buffer(transaction):
    """Write the rows queued in the transaction and not yet written."""
    buffer = transaction.storage.get(BUFFER_KEY)
    if buffer is None or not buffer.rows:
        return
    rows, buffer.rows = buffer.rows, []
    # COPY streams the rows: one statement takes them all.
    chunk = len(rows) if transaction.database.has_copy else FLUSH_CHUNK
    for start in range(0, len(rows), chunk):
        _insert(transaction, rows[start:start + chunk])


def discard_buffer(transaction):
    """Forget the rows queued since the last flush (a rolled back task)."""
    buffer = transaction.storage.get(BUFFER_KEY)
    if buffer is not None:
        buffer.rows.clear()
        # A notification sent within the rolled back work is undone,
        # and so may be the hook that flushes and notifies at commit.
        buffer.notify = True
        buffer.hooked = False


def _before_commit(transaction, buffer):
    buffer.hooked = False
    flush_buffer(transaction)
    if buffer.notify and transaction.database.has_channel:
        notify(transaction)
        buffer.notify = False
