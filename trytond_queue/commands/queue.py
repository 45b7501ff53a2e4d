"""The ``trytond-queue`` command line: look after the tasks of a database.

Times are shown as the queue keeps them, in UTC.  Every change runs in a
transaction of its own that is retried on a serialization failure, so
that a command meets running workers without harm.  The work itself is
done by :mod:`trytond_queue.queue.admin`, which the dashboard shares.
"""
import contextlib
import datetime
import functools
import json
import sys
import time

import click

from .. import backend, encoding
from ..config import config
from ..pool import Pool
from ..queue import admin, inline, store
from ..queue.model import STATES
from ..transaction import Transaction, run_in_transaction
from .common import (
    config_option,
    echo_fields,
    echo_json,
    echo_table,
    first_line,
    format_age,
    format_time,
    load_config,
    one_database,
    report_changes,
    user_errors,
)

__all__ = ['main']

# Rows deleted by clean, or failed tasks retried by retry --failed, per
# transaction, so that a large run neither holds locks for long nor
# bloats one transaction.
CLEAN_BATCH = 1000
RETRY_BATCH = 1000
WATCH_INTERVAL = 2.0


@click.group(
    'trytond-queue',
    context_settings={'help_option_names': ['-h', '--help']})
@config_option
def main(config_file):
    """Look after the tasks of the queue of a database."""


def database_command(name=None):
    """Declare a command on one database, with -c, -d and clean errors."""
    def decorator(function):
        @functools.wraps(function)
        def command(config_file, database, **params):
            with user_errors():
                load_config(config_file)
                return function(one_database(database), **params)
        command.__click_params__ = list(
            getattr(function, '__click_params__', []))
        command = click.option(
            '-d', '--database', metavar='NAME',
            help='The database; TRYTOND_DATABASE_NAMES when absent.',
            )(command)
        return main.command(name)(config_option(command))
    return decorator


json_option = click.option(
    '--json', 'as_json', is_flag=True, help='Print JSON instead of text.')


def _open(database_name):
    """Return the pool of the database, refusing an uninitialised one."""
    return Pool(database_name).init(update=False)


@database_command()
def init(database):
    """Create the database if needed, then its tables."""
    db = backend.Database(database)
    if not db.exists():
        db.create()
        click.echo(f'Created the database {database!r}.')
    pool = Pool(database).init()
    click.echo(
        f'The tables of {database!r} are up to date for the modules '
        f'{", ".join(pool.modules())}.')


def _echo_status(database, as_json, interval=None):
    """Print the figures of each queue and their total; redraw a watch."""
    now = store.utcnow()
    with Transaction().start(database, 0, readonly=True) as transaction:
        figures = admin.queue_figures(transaction.connection.cursor(), now)
    total = admin.total_figures(figures)
    if as_json:
        # A watch prints a document per line (JSON Lines), for a pipe.
        echo_json({
            'database': database, 'now': now, 'queues': figures,
            'total': total}, indent=None if interval else 2)
        return
    if interval:
        # Cleared once the figures are read, so that it never stays blank.
        click.clear()
        click.echo(
            f'{database} at {format_time(now)} UTC, every {interval:g} s '
            '(Ctrl+C to stop)\n')
    if not figures:
        click.echo(f'No tasks in the database {database!r}.')
        return
    headers = ['QUEUE'] + [s.upper() for s in STATES] + [
        'OLDEST PENDING', 'OVERDUE', 'LATE']
    rows = [
        [f['queue']] + [f[s] for s in STATES]
        + [format_age(f['oldest_pending_age']), f['overdue'], f['late']]
        for f in figures + ([total] if len(figures) > 1 else [])]
    echo_table(headers, rows)
    click.echo(
        '\nOLDEST PENDING: how long the oldest pending task has waited; '
        'OVERDUE: waiting\nor running past their deadline; LATE: done '
        'after their deadline.')


@database_command()
@click.option(
    '--watch', is_flag=True, help='Redraw the figures until Ctrl+C.')
@click.option(
    '--interval', type=click.FloatRange(min=0.1), metavar='SECONDS',
    help=f'With --watch, the seconds between redraws  [default: '
    f'{WATCH_INTERVAL:g}]')
@json_option
def status(database, watch, interval, as_json):
    """Count the tasks per queue and state; show the late ones.

    With --watch and --json, a JSON document per line at each redraw.
    """
    if interval is not None and not watch:
        raise click.UsageError('--interval goes with --watch only.')
    _open(database)
    if not watch:
        _echo_status(database, as_json)
        return
    interval = WATCH_INTERVAL if interval is None else interval
    try:
        while True:
            _echo_status(database, as_json, interval)
            time.sleep(interval)
    except KeyboardInterrupt:
        # Ctrl+C is how a watch ends, not a failure.
        return


LIST_FIELDS = [
    'name', 'state', 'model', 'method', 'attempts', 'max_attempts',
    'enqueued_at', 'error']


@database_command('list')
@click.option(
    '--state', 'states', multiple=True, type=click.Choice(STATES),
    help='Only the tasks in this state (repeatable).')
@click.option(
    '--queue', 'queues', multiple=True, metavar='NAME',
    help='Only the tasks of this queue (repeatable).')
@click.option('--model', metavar='MODEL', help='Only the tasks of a model.')
@click.option(
    '--limit', default=20, show_default=True, type=click.IntRange(min=1),
    help='The number of tasks shown.')
@json_option
def list_(database, states, queues, model, limit, as_json):
    """List the latest tasks, newest first."""
    pool = _open(database)
    domain = []
    if states:
        domain.append(('state', 'in', list(states)))
    if queues:
        domain.append(('name', 'in', list(queues)))
    if model:
        domain.append(('model', '=', model))
    with Transaction().start(database, 0, readonly=True):
        Queue = pool.get('ir.queue')
        tasks = Queue.search(domain, limit=limit, order=[('id', 'DESC')])
        rows = Queue.read([t.id for t in tasks], ['id'] + LIST_FIELDS)
    if as_json:
        echo_json(rows)
        return
    if not rows:
        click.echo('No tasks match.')
        return
    echo_table(
        ['ID', 'QUEUE', 'STATE', 'CALL', 'ATTEMPTS', 'ENQUEUED (UTC)',
            'ERROR'],
        [[r['id'], r['name'], r['state'], f'{r["model"]}.{r["method"]}',
            f'{r["attempts"] or 0}/{r["max_attempts"] or "-"}',
            format_time(r['enqueued_at']), first_line(r['error'])]
            for r in rows])


@database_command()
@click.argument('task_id', metavar='ID', type=click.IntRange(min=1))
@json_option
def show(database, task_id, as_json):
    """Show everything about a task: its call, times, attempts, error."""
    _open(database)
    with Transaction().start(database, 0, readonly=True):
        task = admin.read_task(task_id)
    if task is None:
        raise click.ClickException(
            f'There is no task {task_id} in the database {database!r}: '
            'see "trytond-queue list".')
    call = task.pop('data') or {}
    if as_json:
        # The call and the result keep the typed JSON of their storage,
        # so that no Decimal or date is turned into something else.
        task['call'] = json.loads(encoding.dumps(call))
        if task['result'] is not None:
            task['result'] = json.loads(task['result'])
        echo_json(task)
        return
    echo_fields(_task_fields(task, call))


def _task_fields(task, call):
    """Return the (label, value) pairs that show prints."""
    fields = [
        (k, task[n]) for k, n in (('task', 'id'), ('queue', 'name'),
            ('state', 'state'), ('model', 'model'), ('method', 'method'))]
    fields += [(k, repr(call.get(k))) for k in (
        'instances', 'args', 'kwargs', 'user', 'context')]
    fields += [
        ('priority', task['priority']),
        ('attempts', f'{task["attempts"] or 0} of '
            f'{task["max_attempts"] or "-"}'),
        ('timeout', task['timeout']),
        ('worker', task['worker']),
        ('unique key', task['unique_key']),
        ]
    fields += [
        (n.replace('_', ' ') + ' (UTC)', format_time(task[n])) for n in (
            'enqueued_at', 'scheduled_at', 'expected_at', 'dequeued_at',
            'finished_at')]
    fields += [(n, task[n]) for n in ('error', 'traceback', 'result')]
    return fields


def _run_change(database, function, *args):
    """Run a change in its own transaction; refuse a unique conflict."""
    result = admin.run_change(database, function, *args)
    if result is None:
        raise click.ClickException(
            'A task with the same unique key was queued meanwhile: run '
            'the command again.')
    return result


def _progress(total, label):
    """Return a progress bar on stderr for long work, else no bar."""
    if total <= RETRY_BATCH:
        return contextlib.nullcontext()
    return click.progressbar(length=total, label=label, file=sys.stderr)


def _retry_failed(database, queue):
    """Retry the failed tasks by batches; return (retried, left)."""
    total = run_in_transaction(
        database, 0, admin.count_failed, queue, readonly=True)
    retried = left = after = 0
    with _progress(total, 'Retrying failed tasks') as bar:
        while True:
            count, kept, after = _run_change(
                database, admin.retry_failed, queue, after, RETRY_BATCH)
            retried += count
            left += kept
            if bar is not None:
                bar.update(count + kept)
            if count + kept < RETRY_BATCH:
                break
    return retried, left


@database_command()
@click.argument(
    'task_ids', metavar='[ID]...', nargs=-1, type=click.IntRange(min=1))
@click.option('--failed', is_flag=True, help='Retry every failed task.')
@click.option(
    '--queue', metavar='NAME', help='With --failed, only those of a queue.')
def retry(database, task_ids, failed, queue):
    """Make failed, cancelled or scheduled tasks pending again.

    Their attempts start again from zero.
    """
    if bool(task_ids) == failed:
        raise click.UsageError('Give either task IDs or --failed.')
    if queue and not failed:
        raise click.UsageError('--queue goes with --failed only.')
    _open(database)
    if failed:
        retried, left = _retry_failed(database, queue)
        click.echo(f'{retried} failed task(s) pending again.')
        if left:
            click.echo(
                f'{left} failed task(s) left as they are: a waiting task '
                'has the same unique key.')
        return
    ids = list(dict.fromkeys(task_ids))
    before, after = _run_change(database, admin.retry_tasks, ids)
    retried = {
        i for i in ids if before.get(i) in admin.RETRYABLE_STATES
        and after.get(i) == 'pending'}
    report_changes(ids, before, retried, 'pending', admin.WHY_NOT_RETRIED)


@database_command()
@click.argument(
    'task_ids', metavar='ID...', nargs=-1, required=True,
    type=click.IntRange(min=1))
def cancel(database, task_ids):
    """Cancel pending or scheduled tasks, so that they never run."""
    _open(database)
    ids = list(dict.fromkeys(task_ids))
    before, cancelled, requested = run_in_transaction(
        database, 0, admin.cancel_tasks, ids)
    for task_id in requested:
        click.echo(
            f'Task {task_id} is running: its worker was asked to roll it '
            'back and mark it cancelled (a task run at commit or by '
            '"trytond-queue run" cannot be stopped).')
    report_changes([i for i in ids if i not in requested], before, cancelled,
        'cancelled', admin.WHY_NOT_CANCELLED)


@database_command()
@click.option(
    '--days', type=click.IntRange(min=0), metavar='N',
    help='Keep the tasks finished in the last N days; [queue] clean_days '
    'when absent.')
def clean(database, days):
    """Delete the tasks done, failed or cancelled more than N days ago."""
    if days is None:
        days = config.getint('queue', 'clean_days', fallback=30)
        if days < 0:
            raise click.ClickException(
                f'[queue] clean_days = {days} is negative: give a number '
                'of days of at least 0.')
    _open(database)
    cutoff = store.utcnow() - datetime.timedelta(days=days)
    total = run_in_transaction(
        database, 0, admin.count_finished, cutoff, readonly=True)
    deleted = 0
    with click.progressbar(
            length=total, label='Deleting finished tasks',
            file=sys.stderr) as bar:
        while True:
            count = run_in_transaction(
                database, 0, admin.delete_finished, cutoff, CLEAN_BATCH)
            deleted += count
            bar.update(count)
            if count < CLEAN_BATCH:
                break
    click.echo(
        f'Deleted {deleted} task(s) finished before '
        f'{format_time(cutoff)} UTC.')


@database_command()
@click.option(
    '--alive', 'alive_only', is_flag=True,
    help='Only the processes alive, leaving out the dead ones.')
@json_option
def workers(database, alive_only, as_json):
    """List the managers and worker processes of the database.

    A process is alive while it holds its lock; the row of a dead one
    stays until the next rescue removes it.
    """
    _open(database)
    with Transaction().start(database, 0, readonly=True) as transaction:
        rows = admin.workers(
            transaction.connection.cursor(), transaction.database)
    if alive_only:
        rows = [r for r in rows if r['alive']]
    for row in rows:
        # No queue named means every queue.
        row['queues'] = row['queues'].split(',') if row['queues'] else []
    if as_json:
        echo_json(rows)
        return
    if not rows:
        click.echo(
            f'No worker is {"alive" if alive_only else "registered"}: '
            f'start one with "trytond-worker -c FILE -d {database}".')
        return
    echo_table(
        ['ID', 'HOST', 'PID', 'MANAGER', 'QUEUES', 'STARTED (UTC)',
            'LAST SEEN (UTC)', 'RUNNING', 'ALIVE'],
        [[r['id'], r['host'], r['pid'], r['manager'],
            ','.join(r['queues']) or 'all', format_time(r['started_at']),
            format_time(r['last_seen']), r['running'],
            'yes' if r['alive'] else 'no'] for r in rows])


@database_command()
@click.option(
    '--bind', metavar='HOST:PORT',
    help='The address to listen on; [web] listen when absent '
    '(127.0.0.1:8300).')
def web(database, bind):
    """Serve the web dashboard and the /metrics of the database.

    A non-loopback address needs [web] password.
    """
    from werkzeug.serving import run_simple

    from ..web.app import listen_address, make_app
    host, port = listen_address(bind)
    application = make_app(database)
    shown = f'[{host}]' if ':' in host else host
    click.echo(
        f'The dashboard of {database!r} is at http://{shown}:{port}/ '
        '(Ctrl+C to stop).')
    try:
        run_simple(host, port, application, threaded=True)
    except OSError as exception:
        raise click.ClickException(
            f'Cannot listen on {host}:{port}: {exception.strerror}. '
            'Choose another address with --bind HOST:PORT.') from exception


@database_command('run')
def run_due(database):
    """Run the tasks due now in this process, then exit.

    For setups without workers, from cron for instance: there, failed
    tasks waiting for a retry and scheduled tasks run nowhere else.
    """
    _open(database)
    done, failed = inline.run_due(database)
    click.echo(f'{done} task(s) done, {failed} failed for good.')


def _add_commands():
    # Commands of their own module, kept apart to keep this one short.
    from .demo import demo
    main.add_command(demo)


_add_commands()

