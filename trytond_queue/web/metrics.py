"""The Prometheus metrics of a queue, read from the database at scrape.

The figures come from the table itself rather than from counters kept in
a process, so that every dashboard and every scrape agrees whatever
process did the work.  Two consequences: the done and failed counters
go down when ``trytond-queue clean`` deletes old tasks, which Prometheus
takes for a counter reset; and the duration histograms cover the tasks
finished in the last hour, not every task since a process started.
"""
import datetime

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)

from ..queue import store
from ..queue.model import STATES
from ..transaction import Transaction
from . import queries

__all__ = ['QueueCollector', 'registry', 'PERIOD']

PERIOD = datetime.timedelta(hours=1)
PREFIX = 'trytond_queue_'


class QueueCollector:
    """A collector that reads the figures of a database's queue."""

    def __init__(self, database_name):
        self.database_name = database_name

    def describe(self):
        """Describe nothing, so that registering reads no database."""
        return []

    def collect(self):
        """Yield the metric families, read in one transaction."""
        now = store.utcnow()
        with Transaction().start(
                self.database_name, 0, readonly=True) as transaction:
            cursor = transaction.connection.cursor()
            figures, _ = queries.queue_figures(cursor, now)
            histograms = queries.duration_histograms(cursor, now, PERIOD)
            workers = queries.workers(cursor, transaction.database)
        yield from _figure_families(figures)
        for kind, text in (
                ('wait', 'from enqueue to start'),
                ('run', 'from start to end')):
            yield _histogram(kind, text, histograms[kind])
        alive = GaugeMetricFamily(
            PREFIX + 'workers',
            'Worker and manager processes alive, by their lock.')
        alive.add_metric([], sum(1 for w in workers if w['alive']))
        yield alive


def _figure_families(figures):
    tasks = GaugeMetricFamily(
        PREFIX + 'tasks', 'Tasks in the table, per queue and state.',
        labels=['queue', 'state'])
    done = CounterMetricFamily(
        PREFIX + 'tasks_done', 'Tasks done that the table keeps.',
        labels=['queue'])
    failed = CounterMetricFamily(
        PREFIX + 'tasks_failed',
        'Tasks failed for good that the table keeps.', labels=['queue'])
    oldest = GaugeMetricFamily(
        PREFIX + 'oldest_pending_age_seconds',
        'How long the oldest pending task has waited (0 when none).',
        labels=['queue'])
    overdue = GaugeMetricFamily(
        PREFIX + 'overdue_tasks',
        'Tasks waiting or running past their deadline.', labels=['queue'])
    late = GaugeMetricFamily(
        PREFIX + 'late_tasks', 'Tasks done after their deadline.',
        labels=['queue'])
    retried = CounterMetricFamily(
        PREFIX + 'tasks_retried',
        'Attempts after the first, of the tasks the table keeps.',
        labels=['queue'])
    rescued = CounterMetricFamily(
        PREFIX + 'tasks_rescued',
        'Times tasks the table keeps were given back after their worker '
        'died.', labels=['queue'])
    for figure in figures:
        name = figure['queue']
        for state in STATES:
            tasks.add_metric([name, state], figure[state])
        done.add_metric([name], figure['done'])
        failed.add_metric([name], figure['failed'])
        oldest.add_metric([name], figure['oldest_pending_age'] or 0)
        overdue.add_metric([name], figure['overdue'])
        late.add_metric([name], figure['late'])
        retried.add_metric([name], figure['retried'])
        rescued.add_metric([name], figure['rescued'])
    return [tasks, done, failed, oldest, overdue, late, retried, rescued]


def _histogram(kind, text, series):
    family = HistogramMetricFamily(
        f'{PREFIX}{kind}_seconds',
        f'Seconds {text} of the tasks finished in the last hour.',
        labels=['queue'])
    for name, (buckets, count, total) in sorted(series.items()):
        bounds = [
            (_bound(b), c) for b, c in zip(queries.DURATION_BUCKETS, buckets)]
        family.add_metric(
            [name], bounds + [('+Inf', count)], sum_value=total)
    return family


def _bound(value):
    return repr(float(value))


def registry(database_name):
    """Return a registry holding only the collector of the database."""
    result = CollectorRegistry(auto_describe=False)
    result.register(QueueCollector(database_name))
    return result


def exposition(registry):
    """Return the text of the metrics, read now."""
    return generate_latest(registry)
