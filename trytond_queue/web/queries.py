"""What the dashboard reads from the database, with python-sql.

Each function takes the cursor of a transaction that its caller opened,
so that a page reads all its figures in one snapshot.  Times are naive
UTC, as the queue keeps them.
"""
import datetime
import functools
import itertools
import pprint

from sql import Cast, Literal, Table
from sql.aggregate import Count, Sum
from sql.conditionals import Case
from sql.functions import Extract, Floor, Function

from .. import backend
from ..queue import admin, store

__all__ = [
    'queue_figures', 'throughput', 'task_page', 'read_task', 'workers',
    'duration_histograms', 'CHART_MINUTES', 'PAGE_SIZE',
    ]

CHART_MINUTES = 60
# The workers are read as the command line reads them; the name stays
# here too, beside the other figures that the metrics read.
workers = admin.workers
PAGE_SIZE = 50
FILTERS = ('name', 'state', 'model', 'method')
LIST_COLUMNS = (
    'id', 'name', 'state', 'model', 'method', 'priority', 'attempts',
    'max_attempts', 'enqueued_at', 'scheduled_at', 'finished_at', 'error')
TIME_COLUMNS = ('enqueued_at', 'scheduled_at', 'finished_at')


# Time arithmetic is written differently by each backend: the helpers
# below are the only places that know how.
class JulianDay(Function):
    __slots__ = ()
    _function = 'JULIANDAY'


def _seconds(start, end):
    """Return the SQL expression of the seconds from start to end."""
    if backend.name() == 'sqlite':
        # SQLite keeps times as text and reads them to the millisecond.
        return (JulianDay(end) - JulianDay(start)) * 86400.0
    return Extract('EPOCH', end - start)


def _floor(value):
    """Return the SQL expression of the integer part of a value >= 0."""
    if backend.name() == 'sqlite':
        # SQLite has FLOOR only when built with its math functions; its
        # CAST truncates, which is the same for a positive value.
        return Cast(value, 'INTEGER')
    return Floor(value)


def queue_figures(cursor, now):
    """Return the figures of each queue and their total, as `status`."""
    figures = admin.queue_figures(cursor, now)
    return figures, admin.total_figures(figures)


def _minute_edges(now, minutes):
    # Bars end on whole minutes, so that they keep their place from one
    # refresh of the page to the next; the last one is the minute that
    # runs.
    end = now.replace(second=0, microsecond=0) + datetime.timedelta(
        minutes=1)
    return [
        end - datetime.timedelta(minutes=minutes - i)
        for i in range(minutes + 1)]


def throughput(cursor, now, minutes=CHART_MINUTES):
    """Return {queue: {'done': [...], 'failed': [...]}} per minute.

    The lists hold one count per minute, oldest first; a queue with no
    task finished in the period is absent.
    """
    queue = Table('ir_queue')
    edges = _minute_edges(now, minutes)
    # The finished index bounds the rows read to the period.
    finished = queue.select(
        queue.name, queue.state,
        _floor(_seconds(Literal(edges[0]), queue.finished_at) / 60).as_(
            'minute'),
        where=queue.state.in_(['done', 'failed'])
        & (queue.finished_at >= edges[0]) & (queue.finished_at < edges[-1]))
    cursor.execute(*finished.select(
        finished.name, finished.state, finished.minute,
        Count(Literal('*')),
        group_by=[finished.name, finished.state, finished.minute]))
    series = {}
    for name, state, minute, count in cursor:
        counts = series.setdefault(
            name, {'done': [0] * minutes, 'failed': [0] * minutes})[state]
        # SQLite reads times to the millisecond: a task at the edge of a
        # minute may fall a hair outside.
        counts[min(max(int(minute), 0), minutes - 1)] += int(count)
    return series


def _where(queue, filters):
    conditions = [
        getattr(queue, name) == filters[name]
        for name in FILTERS if filters.get(name)]
    return functools.reduce(lambda a, b: a & b, conditions, Literal(True))


def task_page(cursor, filters, before=None, after=None, limit=PAGE_SIZE):
    """Return a page of tasks, newest first, and the ids around it.

    Pages are cut by id (keyset paging), so that the last page costs no
    more than the first: before gives the page of tasks older than that
    id, after the one of tasks newer.  The result is (rows, newer,
    older) where newer and older tell whether pages lie on each side.
    """
    queue = Table('ir_queue')
    where = _where(queue, filters)
    columns = [getattr(queue, c) for c in LIST_COLUMNS]
    if after is not None:
        cursor.execute(*queue.select(
            *columns, where=where & (queue.id > after),
            order_by=[queue.id.asc], limit=limit + 1))
    else:
        if before is not None:
            where &= queue.id < before
        cursor.execute(*queue.select(
            *columns, where=where, order_by=[queue.id.desc],
            limit=limit + 1))
    rows = [dict(zip(LIST_COLUMNS, r)) for r in cursor]
    more = len(rows) > limit
    rows = rows[:limit]
    if after is not None:
        rows.reverse()
    for row in rows:
        for name in TIME_COLUMNS:
            row[name] = store.to_datetime(row[name])
    if not rows:
        return rows, before is not None, after is not None
    if after is not None:
        newer, older = more, _exists(cursor, queue, where & (
            queue.id < rows[-1]['id']))
    else:
        newer = before is not None and _exists(
            cursor, queue, _where(queue, filters) & (queue.id > rows[0]['id']))
        older = more
    return rows, newer, older


def _exists(cursor, queue, where):
    cursor.execute(*queue.select(queue.id, where=where, limit=1))
    return cursor.fetchone() is not None


def read_task(task_id):
    """Return the task with its call laid out for the page, or None."""
    task = admin.read_task(task_id)
    if task is None:
        return None
    call = task.pop('data') or {}
    task['call'] = [
        (name, pprint.pformat(call.get(name), width=76))
        for name in ('instances', 'args', 'kwargs', 'user', 'context')]
    return task


def group_workers(rows):
    """Return (manager, [children]) pairs; orphans stand on their own."""
    ids = {r['id'] for r in rows}
    children = {}
    for row in rows:
        if row['manager'] in ids:
            children.setdefault(row['manager'], []).append(row)
    return [
        (row, children.get(row['id'], []))
        for row in rows if row['manager'] not in ids]


# The upper bounds, in seconds, of the buckets of the duration
# histograms: from a task taken at once to one that waits an hour.
DURATION_BUCKETS = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300,
    900, 3600)


def _bucket(seconds):
    """Return the index of the first bucket that holds the seconds."""
    return Case(
        *[(seconds <= b, i) for i, b in enumerate(DURATION_BUCKETS)],
        else_=len(DURATION_BUCKETS))


def duration_histograms(cursor, now, period=datetime.timedelta(hours=1)):
    """Return the wait and run durations of the tasks finished lately.

    The result is {'wait' | 'run': {queue: (buckets, count, sum)}} where
    buckets are the cumulative counts at each bound of DURATION_BUCKETS.
    Wait runs from the enqueue to the last start, run from the last
    start to the end, over the tasks finished in the period.
    """
    queue = Table('ir_queue')
    wait = _seconds(queue.enqueued_at, queue.dequeued_at)
    run = _seconds(queue.dequeued_at, queue.finished_at)
    # A cancelled task that had started ran to no end: it is left out.
    spans = queue.select(
        queue.name, wait.as_('wait'), run.as_('run'),
        _bucket(wait).as_('wait_bucket'), _bucket(run).as_('run_bucket'),
        where=queue.state.in_(['done', 'failed'])
        & (queue.finished_at >= now - period)
        & (queue.dequeued_at != None))  # noqa: E711
    # One pass over the rows, grouped by both buckets at once; the
    # cumulative counts are summed up here.
    cursor.execute(*spans.select(
        spans.name, spans.wait_bucket, spans.run_bucket,
        Count(Literal('*')), Sum(spans.wait), Sum(spans.run),
        group_by=[spans.name, spans.wait_bucket, spans.run_bucket]))
    size = len(DURATION_BUCKETS) + 1
    totals = {}
    for name, wait_bucket, run_bucket, count, wait_sum, run_sum in cursor:
        for kind, bucket, total in (
                ('wait', wait_bucket, wait_sum),
                ('run', run_bucket, run_sum)):
            counts, sums = totals.setdefault(kind, {}).setdefault(
                name, ([0] * size, [0.0]))
            counts[int(bucket)] += int(count)
            sums[0] += float(total or 0)
    result = {'wait': {}, 'run': {}}
    for kind, queues in totals.items():
        for name, (counts, sums) in queues.items():
            cumulative = list(itertools.accumulate(counts))
            result[kind][name] = (
                cumulative[:-1], cumulative[-1], sums[0])
    return result


def database_answers(cursor):
    """Run the cheapest query that proves the database answers."""
    cursor.execute(*Table('ir_queue').select(Literal(1), limit=1))
    cursor.fetchall()

