"""``trytond-queue demo``: the queue at work on SQLite, in one command.

It writes a configuration and an SQLite database in a directory of its
own, queues the seed example's calls, runs ``trytond-worker`` until they
are done with a progress bar, and says what happened and how fast.
"""
import os
import signal
import subprocess
import sys
import time

import click
from sql import Table
from sql.aggregate import Count, Max, Min

from .. import backend
from ..config import config
from ..pool import Pool
from ..queue.store import to_datetime
from ..transaction import Transaction
from .common import user_errors

__all__ = ['demo']

DATABASE = 'demo'
CONFIG = """\
[database]
uri = sqlite://
path = {path}

[pool]
modules = trytond_queue.example

[queue]
worker = True
"""


def _write_config(directory):
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, 'trytond.conf')
    with open(path, 'w') as fp:
        fp.write(CONFIG.format(path=os.path.abspath(directory)))
    return path


def _counts():
    """Return (finished, failed, total) of the demo's queue."""
    queue = Table('ir_queue')
    with Transaction().start(DATABASE, 0, readonly=True) as transaction:
        cursor = transaction.connection.cursor()
        cursor.execute(*queue.select(
            queue.state, Count(queue.id), group_by=[queue.state]))
        counts = dict(cursor)
    finished = sum(counts.get(s, 0) for s in ('done', 'failed'))
    return finished, counts.get('failed', 0), sum(counts.values())


def _drain_seconds():
    queue = Table('ir_queue')
    with Transaction().start(DATABASE, 0, readonly=True) as transaction:
        cursor = transaction.connection.cursor()
        cursor.execute(*queue.select(
            Min(queue.dequeued_at), Max(queue.finished_at)))
        first, last = cursor.fetchone()
    return (to_datetime(last) - to_datetime(first)).total_seconds()


def _enqueue(tasks):
    with Transaction().start(DATABASE, 0):
        Record = Pool().get('example.record')
        records = Record.create([{'value': 0}] * tasks)
    start = time.perf_counter()
    with Transaction().start(DATABASE, 0):
        Record = Pool().get('example.record')
        Record.launch(Record.browse([r.id for r in records]))
    return time.perf_counter() - start


def _run_worker(config_path, processes, tasks):
    worker = subprocess.Popen(
        [sys.executable, '-m', 'trytond_queue.commands.worker',
            '-c', config_path, '-d', DATABASE, '-n', str(processes)],
        start_new_session=True)
    try:
        with click.progressbar(
                length=tasks, label='Running the tasks',
                file=sys.stderr) as bar:
            finished = 0
            while finished < tasks:
                if worker.poll() is not None:
                    raise click.ClickException(
                        f'trytond-worker stopped with code '
                        f'{worker.returncode}: see its messages above.')
                time.sleep(0.1)
                now, _, _ = _counts()
                bar.update(now - finished)
                finished = now
    finally:
        if worker.poll() is None:
            worker.send_signal(signal.SIGTERM)
            worker.wait(60)
    return worker.returncode


@click.command(context_settings={'help_option_names': ['-h', '--help']})
@click.option('--directory', default='trytond-queue-demo',
    show_default=True, type=click.Path(file_okay=False),
    help='Where to write the configuration and the SQLite database.')
@click.option('--tasks', default=5000, show_default=True,
    type=click.IntRange(min=1, max=1_000_000), help='Tasks to queue.')
@click.option('-n', '--processes', default=2, show_default=True,
    type=click.IntRange(min=1, max=64), help='Worker processes.')
def demo(directory, tasks, processes):
    """Queue the seed example's tasks on SQLite and run a worker on them."""
    with user_errors():
        config_path = _write_config(directory)
        config.reset()
        config.update_etc(config_path)
        database = backend.Database(DATABASE)
        if database.exists():
            database.drop()
        Pool(DATABASE).init()
        click.echo(f'Database {database.path}, configuration {config_path}')
        enqueue_time = _enqueue(tasks)
        click.echo(
            f'Queued {tasks} calls of example.record.process in one '
            f'transaction: {tasks / enqueue_time:,.0f} tasks/s')
        _run_worker(config_path, processes, tasks)
        finished, failed, total = _counts()
        seconds = _drain_seconds()
    click.echo(
        f'{finished - failed} of {total} tasks done, {failed} failed, '
        f'by {processes} worker process(es) in {seconds:.2f} s: '
        f'{finished / max(seconds, 1e-6):,.0f} tasks/s on SQLite.')
    click.echo('See them with:')
    click.echo(f'  trytond-queue -c {config_path} status -d {DATABASE}')
    click.echo(f'  trytond-queue -c {config_path} list -d {DATABASE}')
    click.echo(f'  trytond-queue -c {config_path} web -d {DATABASE}')
