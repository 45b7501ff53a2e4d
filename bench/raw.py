"""The raw SQL floors the framework is compared with.

The ceiling of the drain is what two processes of plain psycopg2 reach
on a simple table, claiming 100 rows per statement and finishing each
batch (the record's update and the mark done) in one transaction; the
floor of a single enqueue is one INSERT of a queue row and its commit.
The statements are built once with python-sql and reused, as a
hand-tuned worker would.
"""
import datetime
import multiprocessing
import queue
import time

import psycopg2
import psycopg2.sql
from sql import Column, For, Literal, Select, Table
from sql.functions import Function
from sql.operators import Any, Equal

from harness import BenchError

__all__ = ['create_tables', 'fill', 'ceiling', 'bare_inserts']

JOB, RECORD = 'bench_raw_job', 'bench_raw_record'


class GenerateSeries(Function):
    __slots__ = ()
    _function = 'GENERATE_SERIES'


class ForSkipLocked(For):
    """FOR UPDATE SKIP LOCKED, which python-sql does not write."""

    __slots__ = ()

    def __str__(self):
        return super().__str__() + ' SKIP LOCKED'


def utcnow():
    """Return the naive UTC time, as the queue keeps its times."""
    return datetime.datetime.now(datetime.timezone.utc).replace(
        tzinfo=None)


def _identifiers(*names):
    return [psycopg2.sql.Identifier(n) for n in names]


def create_tables(connection):
    """Create the job and record tables of the raw ceiling."""
    cursor = connection.cursor()
    job, record, index = _identifiers(JOB, RECORD, JOB + '_pending')
    cursor.execute(psycopg2.sql.SQL(
        'CREATE TABLE {} (id SERIAL PRIMARY KEY, value INTEGER)'
        ).format(record))
    cursor.execute(psycopg2.sql.SQL(
        'CREATE TABLE {} (id SERIAL PRIMARY KEY, record INTEGER, '
        'state VARCHAR NOT NULL)').format(job))
    cursor.execute(psycopg2.sql.SQL(
        "CREATE INDEX {} ON {} (id) WHERE state = 'pending'"
        ).format(index, job))


def fill(connection, rows):
    """Replace the rows of both tables by rows pending jobs."""
    cursor = connection.cursor()
    job, record = Table(JOB), Table(RECORD)
    cursor.execute(psycopg2.sql.SQL(
        'TRUNCATE {}, {} RESTART IDENTITY').format(
        *_identifiers(JOB, RECORD)))
    cursor.execute(*record.insert(
        [record.id, record.value],
        Select([GenerateSeries(1, rows), Literal(0)])))
    cursor.execute(*job.insert(
        [job.record, job.state],
        Select([GenerateSeries(1, rows), Literal('pending')])))
    for name in (JOB, RECORD):
        cursor.execute(psycopg2.sql.SQL('VACUUM ANALYZE {}').format(
            *_identifiers(name)))


def _statements(batch):
    job, pending, record = Table(JOB), Table(JOB), Table(RECORD)
    candidates = pending.select(
        pending.id, where=pending.state == 'pending',
        order_by=[pending.id.asc], limit=batch,
        for_=ForSkipLocked('UPDATE'))
    claim = job.update(
        [job.state], ['running'], where=job.id.in_(candidates),
        returning=[job.id, job.record])
    ids = []
    write = record.update(
        [record.value], [42], where=Equal(record.id, Any(ids)))
    done = job.update(
        [job.state], ['done'], where=Equal(job.id, Any(ids)))
    return tuple(claim), tuple(write), tuple(done)


def _drain(dsn, dbname, batch, ready, go, results):
    connection = psycopg2.connect(dsn, dbname=dbname)
    cursor = connection.cursor()
    (claim, claim_params), (write, _), (done, _) = _statements(batch)
    ready.put(True)
    go.wait()
    start, rows = time.time(), 0
    while True:
        # The claim commits on its own, as a worker's does, so that a
        # crash of the process leaves the rows marked taken.
        cursor.execute(claim, claim_params)
        claimed = cursor.fetchall()
        connection.commit()
        if not claimed:
            break
        job_ids = [job_id for job_id, _ in claimed]
        record_ids = [record_id for _, record_id in claimed]
        cursor.execute(write, (42, record_ids))
        cursor.execute(done, ('done', job_ids))
        connection.commit()
        rows += len(claimed)
    results.put((start, time.time(), rows))
    connection.close()


def ceiling(dsn, dbname, processes=2, batch=100):
    """Drain the job table with raw SQL; return (rows, seconds)."""
    context = multiprocessing.get_context('spawn')
    ready, results, go = context.Queue(), context.Queue(), context.Event()
    children = [
        context.Process(
            target=_drain, args=(dsn, dbname, batch, ready, go, results))
        for _ in range(processes)]
    for child in children:
        child.start()
    try:
        for _ in children:
            ready.get(timeout=60)
        go.set()
        reports = [results.get(timeout=600) for _ in children]
    except queue.Empty as exception:
        raise BenchError(
            'A process of the raw drain died or hung; see its traceback '
            'above.') from exception
    finally:
        for child in children:
            child.join(10)
            if child.is_alive():
                child.kill()
                child.join()
    start = min(r[0] for r in reports)
    end = max(r[1] for r in reports)
    return sum(r[2] for r in reports), end - start


def bare_inserts(connection, row, calls):
    """Insert calls queue rows, one per transaction; return seconds.

    row maps the columns of ir_queue to values; enqueued_at is taken
    anew for each row.  The id is returned, as an enqueue returns it.
    """
    table = Table('ir_queue')
    names = list(row)
    text, _ = tuple(table.insert(
        [Column(table, n) for n in names], [[row[n] for n in names]],
        returning=[table.id]))
    cursor = connection.cursor()
    position = names.index('enqueued_at')
    values = [row[n] for n in names]
    start = time.perf_counter()
    for _ in range(calls):
        values[position] = utcnow()
        cursor.execute(text, values)
        cursor.fetchone()
        connection.commit()
    return time.perf_counter() - start
