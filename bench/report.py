"""The benchmark's report: the figures, their targets and the machine."""
import os
import platform
import sqlite3
import statistics
import subprocess
import sys

import click
import psycopg2
from sql import Table

from harness import BENCH_DIR

__all__ = ['FIGURES', 'STEP_FIGURES', 'number', 'print_report', 'machine']

# The server settings printed with the figures.
SETTINGS = (
    'autovacuum', 'fsync', 'synchronous_commit', 'shared_buffers', 'jit')
# figure: (label, unit)
FIGURES = {
    'ceiling': ('raw SQL ceiling, 100 rows a statement', 'rows/s'),
    'drain': ('drain, seed task', 'tasks/s'),
    'empty': ('drain, empty method', 'tasks/s'),
    'enqueue': ('enqueue, seed loop in 1 transaction', 'tasks/s'),
    'single': ('enqueue, 1 call per transaction', 'us/call'),
    'bare': ('bare 1-row INSERT RETURNING + commit', 'us/call'),
    'single ratio': ('enqueue per transaction / bare insert', ''),
    'latency p50': ('latency commit -> start, p50', 'ms'),
    'latency p99': ('latency commit -> start, p99', 'ms'),
    'history': ('drain, seed task, finished rows kept', 'tasks/s'),
    'drain cpu': ('  CPU per task, workers + server', 'us'),
    'drain cpu worker': ('  of which the worker processes', 'us'),
    'empty cpu': ('  CPU per task, workers + server', 'us'),
    'empty cpu worker': ('  of which the worker processes', 'us'),
    'history cpu': ('  CPU per task, workers + server', 'us'),
    'history cpu worker': ('  of which the worker processes', 'us'),
    'sqlite cpu': ('  CPU per task, worker process', 'us'),
    'sqlite cpu worker': ('  of which the worker process', 'us'),
    'sqlite enqueue': ('SQLite enqueue, seed loop', 'tasks/s'),
    'sqlite': ('SQLite drain, seed task, 1 process', 'tasks/s'),
    }
# The figures that each step of the benchmark measures.
STEP_FIGURES = {
    'ceiling': ['ceiling'],
    'drain': ['drain', 'drain cpu', 'drain cpu worker'],
    'empty': ['empty', 'empty cpu', 'empty cpu worker'],
    'enqueue': ['enqueue'],
    'single': ['single', 'bare', 'single ratio'],
    'latency': ['latency p50', 'latency p99'],
    'history': ['history', 'history cpu', 'history cpu worker'],
    'sqlite': ['sqlite enqueue', 'sqlite', 'sqlite cpu',
        'sqlite cpu worker'],
    }


def number(value):
    """Return a figure for reading: thousands apart, 2 decimals if small."""
    if value is None:
        return '-'
    return f'{value:,.{0 if abs(value) >= 100 else 2}f}'


def _per_run_ratio(results, figure, reference):
    """Return the median of the ratios of figure to reference per run."""
    pairs = zip(results.values.get(figure) or [],
        results.values.get(reference) or [])
    ratios = [value / base for value, base in pairs if base]
    return statistics.median(ratios) if ratios else None


def _at_least(bound):
    return lambda value: None if value is None else value >= bound


def _at_most(bound):
    return lambda value: None if value is None else value <= bound


def _targets(results, options):
    """Return (figure, target, ratio, ratio's meaning, met) per row."""
    raw = _per_run_ratio
    drain_ratio = raw(results, 'drain', 'ceiling')
    history_ratio = _per_run_ratio(results, 'history', 'drain')
    single_ratio = results.median('single ratio')
    median = results.median
    return [
        ('ceiling', '', 1.0 if median('ceiling') else None, 'x raw',
            None),
        ('drain', '>= 5,000; >= 0.2 x raw', drain_ratio, 'x raw',
            _both(_at_least(5000)(median('drain')),
                _at_least(0.2)(drain_ratio))),
        *_cpu_rows('drain'),
        ('empty', '>= 10,000', raw(results, 'empty', 'ceiling'), 'x raw',
            _at_least(10_000)(median('empty'))),
        *_cpu_rows('empty'),
        ('enqueue', '>= 50,000', None, '',
            _at_least(50_000)(median('enqueue'))),
        ('single', '<= 1.5 x bare', single_ratio, 'x bare',
            _at_most(1.5)(single_ratio)),
        ('bare', '', None, '', None),
        ('latency p50', '<= 2', None, '',
            _at_most(2)(median('latency p50'))),
        ('latency p99', '<= 10', None, '',
            _at_most(10)(median('latency p99'))),
        ('history', '>= 0.9 x empty table', history_ratio, 'x empty',
            _at_least(0.9)(history_ratio)),
        *_cpu_rows('history'),
        ('sqlite enqueue', '', None, '', None),
        ('sqlite', '', None, '', None),
        ('sqlite cpu', '', None, '', None),
        ]


def _cpu_rows(figure):
    return [
        (f'{figure} cpu', '', None, '', None),
        (f'{figure} cpu worker', '', None, '', None)]


def _both(first, second):
    if first is None or second is None:
        return None
    return first and second


def _label(figure, options):
    label = FIGURES[figure][0]
    if figure == 'history':
        return f'{label}: {options["history_rows"]:,}'
    if figure == 'enqueue':
        return f'{label}: {options["tasks"]:,} calls'
    return label


def print_report(results, options, description):
    """Print the table of the medians, their targets and the errors."""
    click.echo()
    click.echo(
        f'trytond_queue benchmark: medians of {options["runs"]} run(s), '
        f'{options["tasks"]:,} tasks, {options["processes"]} worker '
        'processes on PostgreSQL')
    for key, value in description.items():
        click.echo(f'  {key}: {value}')
    click.echo()
    failed = {
        figure for step in results.errors for figure in STEP_FIGURES[step]}
    headers = ('figure', 'median', 'unit', 'target', 'ratio', 'met')
    table = []
    for figure, target, ratio, meaning, met in _targets(results, options):
        if figure == 'single ratio':
            continue
        value = results.median(figure)
        if value is None and (figure not in failed or 'cpu' in figure):
            continue
        table.append((
            _label(figure, options),
            number(value) if figure not in failed else 'FAILED',
            FIGURES[figure][1], target,
            f'{ratio:.2f} {meaning}' if ratio is not None else '',
            {True: 'yes', False: 'NO', None: ''}[met]))
    widths = [max([len(h)] + [len(r[i]) for r in table])
        for i, h in enumerate(headers)]
    for row in [headers] + table:
        click.echo('  '.join(
            cell.rjust(width) if index == 1 else cell.ljust(width)
            for index, (cell, width) in enumerate(zip(row, widths))
            ).rstrip())
    for step, error in results.errors.items():
        click.echo(f'\nFAILED {step}: {error}')


def machine(uri, load_before):
    """Describe the machine, the servers and the code measured.

    load_before is the load average before the benchmark: other work
    on the machine skews the figures.
    """
    description = {
        'machine': f'{_cpu_model()}, {os.cpu_count()} cores',
        'python': platform.python_version(),
        'sqlite': sqlite3.sqlite_version,
        }
    try:
        connection = psycopg2.connect(uri, dbname='postgres')
        try:
            version = connection.info.server_version
            settings = _settings(connection)
        finally:
            connection.close()
        description['postgresql'] = (
            f'{version // 10000}.{version % 10000} at {uri}; {settings}')
    except psycopg2.Error:
        description['postgresql'] = f'unreachable at {uri}'
    description['load average'] = (
        f'{load_before[0]:.2f} before (1 min), '
        f'{os.getloadavg()[0]:.2f} after')
    description['code'] = _git_describe()
    description['command'] = ' '.join(
        ['python bench/benchmark.py'] + sys.argv[1:])
    return description


def _settings(connection):
    """Return the server settings that weigh on the figures."""
    settings = Table('pg_settings')
    cursor = connection.cursor()
    cursor.execute(*settings.select(
        settings.name, settings.setting,
        where=settings.name.in_(list(SETTINGS)),
        order_by=[settings.name.asc]))
    return ', '.join(f'{name}={value}' for name, value in cursor)


def _cpu_model():
    try:
        with open('/proc/cpuinfo') as fp:
            for line in fp:
                if line.startswith('model name'):
                    return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _git_describe():
    try:
        return subprocess.run(
            ['git', 'describe', '--always', '--dirty'],
            cwd=os.path.dirname(BENCH_DIR), capture_output=True,
            text=True, timeout=10).stdout.strip() or 'unknown'
    except (OSError, subprocess.SubprocessError):
        return 'unknown'
