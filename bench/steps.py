"""The measurements of the benchmark, one run of a figure each.

Throughputs of the workers are read from the queue itself, from the
first claim to the last finish, so that the start-up of the processes
is not counted; enqueues and latencies are timed by this process.
"""
import cProfile
import datetime
import json
import statistics
import time

import psycopg2.errors
import psycopg2.sql
from sql import Column, Literal, Select, Table
from sql.aggregate import Count, Max

from trytond_queue.pool import Pool
from trytond_queue.transaction import Transaction

import raw
from harness import BenchError, Worker, cpu_per_task, drain_stats, wait_drained

__all__ = [
    'create_records', 'reset', 'enqueue', 'drain', 'ceiling', 'single',
    'latency', 'percentiles', 'add_history', 'vacuum', 'MODEL',
    ]

MODEL = 'bench.record'
FINAL_STATES = ('done', 'failed', 'cancelled')


def _model(backend):
    backend.activate()
    return Pool(backend.name).get(MODEL)


def create_records(backend, count):
    """Create count records of the workload; return their ids."""
    Record = _model(backend)
    with Transaction().start(backend.name, 0):
        return [r.id for r in Record.create([{'value': 0}] * count)]


def reset(backend, history=None):
    """Empty the queue and set the records back to their first value.

    With history, the id of the last row of the history, the rows up to
    it are kept and the table is vacuumed, as autovacuum would have.
    """
    record, queue = Table('bench_record'), Table('ir_queue')
    connection = backend.connect()
    try:
        cursor = connection.cursor()
        if history is not None:
            backend.execute(cursor, queue.delete(where=queue.id > history))
        elif backend.is_postgresql:
            # TRUNCATE leaves no dead rows behind, unlike DELETE.
            cursor.execute(psycopg2.sql.SQL('TRUNCATE {}').format(
                psycopg2.sql.Identifier('ir_queue')))
        else:
            backend.execute(cursor, queue.delete())
        backend.execute(cursor, record.update(
            [record.value, record.started], [0, None]))
        if backend.is_postgresql:
            # Each run starts from clean tables, whether or not the
            # server runs autovacuum, so that runs do not slow down as
            # dead rows pile up.
            vacuum(connection, 'ir_queue', 'ir_queue_worker', 'bench_record')
    finally:
        connection.close()


def enqueue(backend, ids, launch='launch', profile=None):
    """Queue a task per record in one transaction; return the seconds.

    The time runs from the first call to the end of the commit, which
    writes what the calls buffered.
    """
    Record = _model(backend)
    records = Record.browse(ids)
    profiler = cProfile.Profile() if profile else None
    start = time.perf_counter()
    if profiler:
        profiler.enable()
    with Transaction().start(backend.name, 0):
        getattr(Record, launch)(records)
    if profiler:
        profiler.disable()
    seconds = time.perf_counter() - start
    if profiler:
        profiler.dump_stats(profile)
    return seconds


def drain(backend, ids, launch, processes, worker_options, history=None):
    """Queue a task per record, then drain them.

    Return the tasks/s and the CPU seconds per task of the worker and
    of the server (None where they cannot be read).
    """
    reset(backend, history)
    enqueue(backend, ids, launch)
    with Worker(backend, processes, **worker_options) as worker:
        samples = wait_drained(backend, worker)
    done, failed, error, seconds = drain_stats(backend, history)
    if failed or done != len(ids):
        raise BenchError(
            f'{done} of {len(ids)} tasks done, {failed} failed: {error}')
    if launch == 'launch':
        _check_written(backend, len(ids))
    return done / seconds, cpu_per_task(samples, len(ids))


def _check_written(backend, expected):
    record = Table('bench_record')
    connection = backend.connect()
    try:
        cursor = backend.execute(connection.cursor(), record.select(
            Count(record.id), where=record.value == 42))
        written = cursor.fetchone()[0]
    finally:
        connection.close()
    if written != expected:
        raise BenchError(
            f'The tasks were marked done but only {written} of '
            f'{expected} records were written.')


def ceiling(backend, rows, processes):
    """Drain rows jobs with raw SQL; return rows/s."""
    connection = backend.connect()
    try:
        raw.fill(connection, rows)
    finally:
        connection.close()
    drained, seconds = raw.ceiling(backend.uri, backend.name, processes)
    if drained != rows:
        raise BenchError(
            f'The raw drain took {drained} of {rows} rows.')
    return rows / seconds


def single(backend, ids, calls, warm_up=20):
    """Return (seconds per lone enqueue, seconds per bare insert).

    A lone enqueue is a transaction that queues one task and commits;
    a bare insert writes the same row with plain psycopg2 and commits.
    """
    Record = _model(backend)
    reset(backend)

    def call(id_):
        with Transaction().start(backend.name, 0):
            Record.__queue__.process(Record(id_), 42)

    # A record may be queued more than once: there may be fewer records
    # than calls.
    for index in range(warm_up):
        call(ids[index % len(ids)])
    start = time.perf_counter()
    for index in range(calls):
        call(ids[index % len(ids)])
    framework = (time.perf_counter() - start) / calls
    row = _last_row(backend)
    reset(backend)
    connection = backend.connect(autocommit=False)
    try:
        raw.bare_inserts(connection, row, warm_up)
        bare = raw.bare_inserts(connection, row, calls) / calls
    finally:
        connection.close()
    return framework, bare


def _last_row(backend):
    """Return the values that the framework wrote in its last row."""
    queue = Table('ir_queue')
    connection = backend.connect()
    try:
        cursor = backend.execute(connection.cursor(), queue.select(
            order_by=[queue.id.desc], limit=1))
        names = [d[0] for d in cursor.description]
        values = cursor.fetchone()
    finally:
        connection.close()
    return {
        n: v for n, v in zip(names, values)
        if n != 'id' and v is not None}


def latency(backend, ids, count, processes, worker_options, warm_up=20,
            gap=0.02):
    """Return the latencies in ms from commit to start, sorted.

    Each task is queued once the previous one finished and a pause
    passed, so that it meets an idle worker.
    """
    Record = _model(backend)
    reset(backend)
    if len(ids) < warm_up + count:
        raise BenchError(
            f'The latency needs {warm_up + count} records, '
            f'not {len(ids)}: raise --tasks.')
    committed = {}
    connection = backend.connect()
    try:
        cursor = connection.cursor()
        with Worker(backend, processes, **worker_options) as worker:
            for index, id_ in enumerate(ids[:warm_up + count]):
                with Transaction().start(backend.name, 0):
                    task = Record.__queue__.stamp(Record(id_), 0)
                if index >= warm_up:
                    committed[id_] = time.time()
                time.sleep(gap)
                _wait_task(backend, cursor, task, worker,
                    60 if index == 0 else 10)
        record = Table('bench_record')
        backend.execute(cursor, record.select(
            record.id, record.started,
            where=record.id.in_(list(committed))))
        started = dict(cursor.fetchall())
    finally:
        connection.close()
    return sorted(
        (started[i] - committed[i]) * 1000 for i in committed)


def _wait_task(backend, cursor, task_id, worker, timeout):
    queue = Table('ir_queue')
    query = queue.select(queue.state, queue.error, where=queue.id == task_id)
    limit = time.monotonic() + timeout
    while True:
        state, error = backend.execute(cursor, query).fetchone()
        if state in FINAL_STATES:
            if state != 'done':
                raise BenchError(f'The task {task_id} {state}: {error}')
            return
        worker.check()
        if time.monotonic() > limit:
            raise BenchError(
                f'The task {task_id} did not finish in {timeout} s; the '
                f'output of the worker ends with:\n{worker.log_tail()}')
        time.sleep(0.002)


def percentiles(latencies):
    """Return the 50th and 99th percentiles of the latencies."""
    cuts = statistics.quantiles(latencies, n=100, method='inclusive')
    return cuts[49], cuts[98]


def add_history(backend, rows):
    """Add rows finished tasks to ir_queue; return the last id."""
    queue = Table('ir_queue')
    series = Select([raw.GenerateSeries(1, rows).as_('n')])
    now = datetime.datetime.now(datetime.timezone.utc).replace(
        tzinfo=None)
    # Finished over the last days, half a second apart, so that the
    # index of finished rows is as large as a real one.
    step = Literal(datetime.timedelta(seconds=0.5)) * series.n
    data = json.dumps({
        'model': MODEL, 'method': 'process', 'user': 0, 'context': {},
        'args': [42], 'kwargs': {}, 'instances': 1})
    columns = {
        'name': Literal('default'), 'model': Literal(MODEL),
        'method': Literal('process'), 'data': Literal(data),
        'state': Literal('done'), 'priority': Literal(0),
        'enqueued_at': Literal(now) - step,
        'due_at': Literal(now) - step,
        'dequeued_at': Literal(now) - step,
        'finished_at': Literal(now) - step,
        'attempts': Literal(1), 'max_attempts': Literal(5),
        }
    connection = backend.connect()
    try:
        cursor = connection.cursor()
        backend.execute(cursor, queue.insert(
            [Column(queue, n) for n in columns],
            series.select(*columns.values())))
        vacuum(connection)
        checkpoint(connection)
        cursor = backend.execute(cursor, queue.select(Max(queue.id)))
        return cursor.fetchone()[0]
    finally:
        connection.close()


def vacuum(connection, *tables):
    """Vacuum and analyse the tables, as autovacuum would have by now."""
    cursor = connection.cursor()
    for table in tables or ['ir_queue']:
        cursor.execute(psycopg2.sql.SQL('VACUUM ANALYZE {}').format(
            psycopg2.sql.Identifier(table)))


def checkpoint(connection):
    """Write the dirty pages out now, if the server lets us.

    Otherwise the checkpoint that a bulk insert calls for writes them
    out during the next drains, which then measure the insert.
    """
    cursor = connection.cursor()
    try:
        cursor.execute('CHECKPOINT')
    except psycopg2.errors.InsufficientPrivilege:
        return False
    return True
