"""The benchmark of trytond_queue: the figures of the queue's targets.

Run ``python bench/benchmark.py --help``.  It creates its own PostgreSQL
and SQLite databases, measures each figure several times with the real
``trytond-worker``, prints the medians beside the raw SQL ceiling
measured in the same runs, and drops the databases at the end.
"""
import json
import os
import shutil
import statistics
import sys
import tempfile
import time

import click

from trytond_queue.exceptions import TrytondQueueError

import raw
import steps
from harness import Backend, BenchError, worker_command
from report import FIGURES, machine, number, print_report

STEPS = (
    'ceiling', 'drain', 'empty', 'enqueue', 'single', 'latency',
    'history', 'sqlite')
QUICK = {'runs': 1, 'tasks': 2000, 'latency_tasks': 50,
    'single_calls': 200}


class Results:
    """The values measured per figure, and the errors met per step."""

    def __init__(self):
        self.values = {}
        self.errors = {}

    def add(self, figure, value):
        """Keep one run's value of a figure."""
        self.values.setdefault(figure, []).append(value)

    def median(self, figure):
        """Return the median of a figure's runs, or None."""
        values = self.values.get(figure)
        return statistics.median(values) if values else None

    def run(self, step, function, *args, **kwargs):
        """Run one step, keep its figures and report them on stderr.

        A step that failed once is not run again: its error stands.
        """
        if step in self.errors:
            return
        start = time.monotonic()
        try:
            figures = function(*args, **kwargs)
        except BenchError as exception:
            self.errors[step] = str(exception)
            progress(f'  {step}: FAILED: {exception}')
            return
        for figure, value in figures.items():
            self.add(figure, value)
        shown = ', '.join(
            f'{f} {number(v)} {FIGURES[f][1]}'.rstrip()
            for f, v in figures.items())
        progress(f'  {shown} ({time.monotonic() - start:.1f} s)')


def progress(message):
    """Print a progress line on stderr."""
    click.echo(message, err=True)


@click.command(context_settings={'help_option_names': ['-h', '--help']})
@click.option('--runs', type=click.IntRange(min=1), default=3,
    show_default=True, help='Runs of each figure; medians are printed.')
@click.option('--tasks', type=click.IntRange(min=300), default=10_000,
    show_default=True,
    help='Tasks per drain, calls per enqueue, rows of the raw ceiling.')
@click.option('--processes', type=click.IntRange(min=1), default=2,
    show_default=True, help='Worker processes on PostgreSQL.')
@click.option('--latency-tasks', type=click.IntRange(min=10),
    default=200, show_default=True,
    help='Tasks timed for the latency, after 20 to warm up.')
@click.option('--single-calls', type=click.IntRange(min=10),
    default=1000, show_default=True,
    help='Transactions timed for the single enqueue and the bare insert.')
@click.option('--history', 'history_rows', type=click.IntRange(min=1),
    default=1_000_000, show_default=True,
    help='Finished rows in ir_queue for the history drain.')
@click.option('--quick', is_flag=True,
    help='A smoke run: 1 run, 2,000 tasks, no history step.')
@click.option('--only', multiple=True, type=click.Choice(STEPS),
    help='Run only this step; repeat for several.')
@click.option('--skip', multiple=True, type=click.Choice(STEPS),
    help='Skip this step; repeat for several.')
@click.option('--uri', envvar='TRYTOND_BENCH_URI', show_default=True,
    default='postgresql://postgres@127.0.0.1:5432/',
    help='The PostgreSQL server (TRYTOND_BENCH_URI).')
@click.option('--database', default='trytond_queue_bench',
    show_default=True, help='The name of the databases created.')
@click.option('--worker-command', type=click.Path(dir_okay=False),
    help='The trytond-worker to run (default: beside this Python).')
@click.option('--profile', type=click.Path(file_okay=False),
    help='Profile into this folder: the workers under py-spy, the '
    'enqueue under cProfile (the figures are then slower).')
@click.option('--profile-rate', type=click.IntRange(min=1), default=250,
    show_default=True, help='Samples per second of py-spy.')
@click.option('--profile-cpu', is_flag=True,
    help='Profile CPU time only, leaving out the waits for the server.')
@click.option('--json', 'json_path', type=click.Path(dir_okay=False),
    help='Also write every measured value to this JSON file.')
@click.option('--keep', is_flag=True,
    help='Keep the databases and the temporary folder.')
def main(runs, tasks, processes, latency_tasks, single_calls, history_rows,
         quick, only, skip, uri, database, worker_command, profile,
         profile_rate, profile_cpu, json_path, keep):
    """Measure the figures of the queue and print their medians.

    \b
    Steps, to pick with --only or --skip:
      ceiling  plain psycopg2 drains a simple table, 100 rows a claim
      drain    trytond-worker drains the seed tasks already queued
      empty    the same with a method whose body is empty
      enqueue  the seed's loop queues a task per record, one commit
      single   one task per transaction, beside a bare INSERT + commit
      latency  commit to start of the method, with an idle worker
      history  the drain with finished rows kept in ir_queue
      sqlite   enqueue and drain on SQLite with one worker process
    """
    if quick:
        runs, tasks = QUICK['runs'], min(tasks, QUICK['tasks'])
        latency_tasks = min(latency_tasks, QUICK['latency_tasks'])
        single_calls = min(single_calls, QUICK['single_calls'])
        skip = tuple(skip) + ('history',)
    selected = [s for s in (only or STEPS) if s not in skip]
    options = {
        'runs': runs, 'tasks': tasks, 'processes': processes,
        'latency_tasks': latency_tasks, 'single_calls': single_calls,
        'history_rows': history_rows, 'steps': selected,
        }
    plan = Plan(
        options,
        {'command': worker_command or _worker_command(),
            'rate': profile_rate, 'idle': not profile_cpu},
        profile)
    if profile:
        os.makedirs(profile, exist_ok=True)
    directory = tempfile.mkdtemp(prefix='trytond-queue-bench-')
    postgresql = Backend('postgresql', database, directory, uri)
    history = Backend('postgresql', f'{database}_history', directory, uri)
    sqlite = Backend('sqlite', database, directory)
    results = Results()
    started, load = time.monotonic(), os.getloadavg()
    try:
        if set(selected) - {'sqlite'}:
            _run_postgresql(postgresql, history, results, plan)
        if 'sqlite' in selected:
            _run_sqlite(sqlite, results, plan)
    finally:
        if keep:
            progress(f'kept {directory} and the databases {database}*')
        else:
            for backend in (postgresql, history, sqlite):
                backend.drop()
            shutil.rmtree(directory, ignore_errors=True)
    progress(f'done in {time.monotonic() - started:.0f} s')
    description = machine(uri, load)
    print_report(results, options, description)
    if json_path:
        with open(json_path, 'w') as fp:
            json.dump({
                'options': options, 'machine': description,
                'values': results.values, 'errors': results.errors,
                }, fp, indent=2)
    if results.errors:
        sys.exit(1)


def _worker_command():
    try:
        return worker_command()
    except BenchError as exception:
        raise click.ClickException(str(exception)) from exception


class Plan:
    """What to run, with which options, and where profiles go."""

    def __init__(self, options, worker_options, profile):
        self.options = options
        self.steps = options['steps']
        self.worker_options = worker_options
        self.profile = profile

    def profile_path(self, name, run, suffix):
        """Return the file of a step's profile, or None."""
        if not self.profile:
            return None
        return os.path.join(self.profile, f'{name}-run{run}.{suffix}')

    def worker(self, name, run):
        """Return the options of the worker of a step."""
        return dict(
            self.worker_options,
            profile=self.profile_path(name, run, 'txt'))


def _ceiling(backend, rows, processes):
    return {'ceiling': steps.ceiling(backend, rows, processes)}


def _drain(figure, backend, ids, launch, processes, worker, history=None):
    rate, cpu = steps.drain(
        backend, ids, launch, processes, worker, history=history)
    figures = {figure: rate}
    if cpu is not None:
        figures[f'{figure} cpu'] = sum(cpu) * 1e6
        if backend.is_postgresql:
            figures[f'{figure} cpu worker'] = cpu[0] * 1e6
    return figures


def _enqueue(figure, backend, ids, profile=None):
    steps.reset(backend)
    return {figure: len(ids) / steps.enqueue(backend, ids, profile=profile)}


def _single(backend, ids, calls):
    framework, bare = steps.single(backend, ids, calls)
    return {
        'single': framework * 1e6, 'bare': bare * 1e6,
        'single ratio': framework / bare}


def _latency(backend, ids, count, processes, worker):
    latencies = steps.latency(backend, ids, count, processes, worker)
    p50, p99 = steps.percentiles(latencies)
    return {'latency p50': p50, 'latency p99': p99}


def _create(backend, tasks):
    """Create the database and its records; return the records' ids."""
    progress(f'PostgreSQL: creating {backend.name} and {tasks:,} records')
    try:
        backend.create()
    except TrytondQueueError as exception:
        raise click.ClickException(
            f'{exception} Give the server with --uri.') from exception
    return steps.create_records(backend, tasks)


def _run_postgresql(backend, history, results, plan):
    options = plan.options
    processes, tasks = options['processes'], options['tasks']
    ids = _create(backend, tasks)
    connection = backend.connect()
    try:
        raw.create_tables(connection)
    finally:
        connection.close()
    if 'history' in plan.steps:
        # The history has a database of its own, so that each run
        # drains beside it right after draining an empty table, and the
        # ratio compares two drains under the same load.
        history_ids = _create(history, tasks)
        rows = options['history_rows']
        progress(f'PostgreSQL: adding {rows:,} finished rows to ir_queue')
        start = time.monotonic()
        last = steps.add_history(history, rows)
        progress(f'  added in {time.monotonic() - start:.1f} s')
    for run in range(1, options['runs'] + 1):
        progress(f'PostgreSQL run {run} of {options["runs"]}')
        if 'ceiling' in plan.steps:
            results.run('ceiling', _ceiling, backend, tasks, processes)
        if {'drain', 'history'} & set(plan.steps):
            results.run(
                'drain', _drain, 'drain', backend, ids, 'launch',
                processes, plan.worker('drain', run))
        if 'history' in plan.steps:
            results.run(
                'history', _drain, 'history', history, history_ids,
                'launch', processes, plan.worker('history', run),
                history=last)
        if 'empty' in plan.steps:
            results.run(
                'empty', _drain, 'empty', backend, ids, 'launch_empty',
                processes, plan.worker('empty', run))
        if 'enqueue' in plan.steps:
            results.run(
                'enqueue', _enqueue, 'enqueue', backend, ids,
                plan.profile_path('enqueue', run, 'pstats'))
        if 'single' in plan.steps:
            results.run(
                'single', _single, backend, ids, options['single_calls'])
        if 'latency' in plan.steps:
            results.run(
                'latency', _latency, backend, ids,
                options['latency_tasks'], processes,
                plan.worker('latency', run))


def _run_sqlite(backend, results, plan):
    options = plan.options
    tasks = options['tasks']
    progress(f'SQLite: creating {backend.path} and {tasks:,} records')
    backend.create()
    ids = steps.create_records(backend, tasks)

    def measure(run):
        figures = _enqueue('sqlite enqueue', backend, ids)
        figures.update(_drain(
            'sqlite', backend, ids, 'launch', 1,
            plan.worker('sqlite', run)))
        return figures

    for run in range(1, options['runs'] + 1):
        progress(f'SQLite run {run} of {options["runs"]}')
        results.run('sqlite', measure, run)


if __name__ == '__main__':
    main()
