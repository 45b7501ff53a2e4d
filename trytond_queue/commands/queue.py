"""The ``trytond-queue`` command line: look after the tasks of a database.

Times are shown as the queue keeps them, in UTC.  Every change runs in a
transaction of its own that is retried on a serialization failure, so
that a command meets running workers without harm.
"""
import datetime
import functools
import json
import sys
import textwrap

import click
from sql import Literal, Table
from sql.aggregate import Count, Min, Sum
from sql.conditionals import Case, Coalesce
from sql.operators import Exists

from .. import backend, encoding
from ..config import config
from ..pool import Pool
from ..queue import store
from ..queue.model import FINAL_STATES, STATES, WAITING_STATES
from ..queue.notify import CANCEL_CHANNEL, notify
from ..transaction import Transaction, run_in_transaction
from .common import (
    config_option,
    echo_json,
    echo_table,
    format_time,
    load_config,
    one_database,
    user_errors,
)

__all__ = ['main']

# Rows deleted per statement by clean, each batch in its own transaction,
# so that a large clean neither holds locks for long nor bloats one
# transaction.
CLEAN_BATCH = 1000
RETRYABLE_STATES = ('failed', 'cancelled', 'scheduled')
ERROR_WIDTH = 60
# Why a task in a state is left unchanged.  A failed, cancelled or
# scheduled task is retried unless the unique index forbids it.
NOT_RETRIED = dict(
    dict.fromkeys(
        RETRYABLE_STATES,
        'was left as it is: a waiting task has the same unique key'),
    running='is running: it can be retried once it has failed',
    done='is done: a finished task does not run again, queue a new one')
NOT_CANCELLED = {
    'running': 'is running, and only PostgreSQL can stop a running task',
    'done': 'is done: there is nothing left to cancel',
    'failed': 'has failed: it will not run again unless retried',
    }


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


def _queue_figures(cursor, now):
    """Return the figures of each queue, in the order of the names."""
    queue = Table('ir_queue')
    active = queue.state.in_(list(WAITING_STATES) + ['running'])
    counts = [
        Sum(Case((queue.state == s, 1), else_=0)) for s in STATES]
    cursor.execute(*queue.select(
        queue.name, *counts,
        Min(Case((queue.state == 'pending',
            Coalesce(queue.scheduled_at, queue.enqueued_at)))),
        Sum(Case((active & (queue.expected_at < now), 1), else_=0)),
        Sum(Case(((queue.state == 'done')
            & (queue.finished_at > queue.expected_at), 1), else_=0)),
        group_by=[queue.name], order_by=[queue.name.asc]))
    figures = []
    for name, *states, waiting_since, overdue, late in cursor:
        waiting_since = store.to_datetime(waiting_since)
        figure = {'queue': name}
        figure.update(zip(STATES, map(int, states)))
        figure['oldest_pending_age'] = (
            (now - waiting_since).total_seconds() if waiting_since else None)
        figure.update(overdue=int(overdue), late=int(late))
        figures.append(figure)
    return figures


def _total(figures):
    total = {'queue': 'total'}
    for key in STATES + ('overdue', 'late'):
        total[key] = sum(f[key] for f in figures)
    ages = [f['oldest_pending_age'] for f in figures
        if f['oldest_pending_age'] is not None]
    total['oldest_pending_age'] = max(ages, default=None)
    return total


def _age(seconds):
    if seconds is None:
        return None
    return str(datetime.timedelta(seconds=round(max(seconds, 0))))


@database_command()
@json_option
def status(database, as_json):
    """Count the tasks per queue and state; show the late ones."""
    _open(database)
    now = store.utcnow()
    with Transaction().start(database, 0, readonly=True) as transaction:
        figures = _queue_figures(transaction.connection.cursor(), now)
    total = _total(figures)
    if as_json:
        echo_json({
            'database': database, 'now': now, 'queues': figures,
            'total': total})
        return
    if not figures:
        click.echo(f'No tasks in the database {database!r}.')
        return
    headers = ['QUEUE'] + [s.upper() for s in STATES] + [
        'OLDEST PENDING', 'OVERDUE', 'LATE']
    rows = [
        [f['queue']] + [f[s] for s in STATES]
        + [_age(f['oldest_pending_age']), f['overdue'], f['late']]
        for f in figures + ([total] if len(figures) > 1 else [])]
    echo_table(headers, rows)
    click.echo(
        '\nOLDEST PENDING: how long the oldest pending task has waited; '
        'OVERDUE: waiting\nor running past their deadline; LATE: done '
        'after their deadline.')


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
            format_time(r['enqueued_at']), _first_line(r['error'])]
            for r in rows])


def _first_line(text):
    if not text:
        return ''
    return textwrap.shorten(
        text.splitlines()[0], ERROR_WIDTH, placeholder='...')


def _read_task(pool, task_id):
    Queue = pool.get('ir.queue')
    if not Queue.search_count([('id', '=', task_id)]):
        return None
    return Queue.read([task_id])[0]


@database_command()
@click.argument('task_id', metavar='ID', type=click.IntRange(min=1))
@json_option
def show(database, task_id, as_json):
    """Show everything about a task: its call, times, attempts, error."""
    pool = _open(database)
    with Transaction().start(database, 0, readonly=True):
        task = _read_task(pool, task_id)
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
    _echo_fields(_task_fields(task, call))


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


def _echo_fields(fields):
    """Print label: value lines, a value of several lines below."""
    width = max(len(k) for k, _ in fields) + 2
    for key, value in fields:
        text = '' if value is None else str(value).rstrip()
        if '\n' in text:
            click.echo(f'{key}:')
            click.echo(textwrap.indent(text, '  '))
        else:
            click.echo(f'{key + ":":<{width}}{text}'.rstrip())


def _states(cursor, ids):
    queue = Table('ir_queue')
    cursor.execute(*queue.select(
        queue.id, queue.state, where=queue.id.in_(list(ids))))
    return dict(cursor)


def _retry_query(selection, now):
    """Return the update that makes the selected tasks pending again.

    A unique task is left as it is when a waiting task has its key, or
    when a twin of lower id is retried with it: the unique index allows
    one waiting copy only.
    """
    queue, twin = Table('ir_queue'), Table('ir_queue')
    twin_waits = Exists(twin.select(
        Literal(1),
        where=(twin.unique_key == queue.unique_key) & (twin.id != queue.id)
        & (twin.state.in_(list(WAITING_STATES))
            | ((twin.id < queue.id) & selection(twin)))))
    return queue.update(
        [queue.state, queue.attempts, queue.scheduled_at,
            queue.finished_at, queue.due_at, queue.worker],
        ['pending', 0, None, None, Coalesce(queue.expected_at, now), None],
        where=selection(queue) & ~twin_waits)


def _retry_ids(ids):
    def selection(table):
        return table.id.in_(ids) & table.state.in_(list(RETRYABLE_STATES))
    cursor = Transaction().connection.cursor()
    before = _states(cursor, ids)
    cursor.execute(*_retry_query(selection, store.utcnow()))
    after = _states(cursor, ids)
    return before, after


def _retry_failed(queue_name):
    def selection(table):
        where = table.state == 'failed'
        if queue_name:
            where &= table.name == queue_name
        return where
    cursor = Transaction().connection.cursor()
    cursor.execute(*_retry_query(selection, store.utcnow()))
    retried = cursor.rowcount
    queue = Table('ir_queue')
    cursor.execute(*queue.select(Count(Literal('*')), where=selection(queue)))
    return retried, cursor.fetchone()[0]


def _report(ids, before, changed, wanted, reasons):
    """Print what became of each task; fail if one was left unchanged."""
    refused = 0
    for task_id in ids:
        state = before.get(task_id)
        if task_id in changed:
            click.echo(f'Task {task_id} is {wanted}.')
        elif state == wanted:
            click.echo(f'Task {task_id} is already {wanted}.')
        else:
            refused += 1
            reason = 'does not exist' if state is None else reasons[state]
            click.echo(f'Task {task_id} {reason}.', err=True)
    if refused:
        raise click.ClickException(
            f'{refused} of {len(ids)} task(s) left unchanged.')


def _run_retry(database, function, *args):
    """Run a retry in its own transaction; report a unique conflict."""
    try:
        return run_in_transaction(database, 0, function, *args)
    except Exception as exception:
        # A unique task queued after the transaction began escapes the
        # guard of the update, and the unique index refuses its twin.
        if not backend.Database(database).is_integrity_error(exception):
            raise
        raise click.ClickException(
            'A task with the same unique key was queued meanwhile: run '
            'the command again.') from exception


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
        retried, left = _run_retry(database, _retry_failed, queue)
        click.echo(f'{retried} failed task(s) pending again.')
        if left:
            click.echo(
                f'{left} failed task(s) left as they are: a waiting task '
                'has the same unique key.')
        return
    ids = list(dict.fromkeys(task_ids))
    before, after = _run_retry(database, _retry_ids, ids)
    retried = {
        i for i in ids if before.get(i) in RETRYABLE_STATES
        and after.get(i) == 'pending'}
    _report(ids, before, retried, 'pending', NOT_RETRIED)


def _cancel(ids):
    cursor = Transaction().connection.cursor()
    before = _states(cursor, ids)
    # The states read stay true until the commit: SQLite lets one
    # writer at a time, and on PostgreSQL a worker that claims one of
    # the tasks meanwhile makes the update a serialization failure, so
    # that the transaction runs again.
    waiting = [i for i in ids if before.get(i) in WAITING_STATES]
    store.finish(cursor, waiting, state='cancelled')
    transaction = Transaction()
    running = [i for i in ids if before.get(i) == 'running']
    if running and transaction.database.has_channel:
        # The row of a running task is locked by its run: its manager
        # learns of the request at commit and stops the task.
        for task_id in running:
            notify(transaction, str(task_id), channel=CANCEL_CHANNEL)
        return before, set(waiting), running
    return before, set(waiting), []


@database_command()
@click.argument(
    'task_ids', metavar='ID...', nargs=-1, required=True,
    type=click.IntRange(min=1))
def cancel(database, task_ids):
    """Cancel pending or scheduled tasks, so that they never run."""
    _open(database)
    ids = list(dict.fromkeys(task_ids))
    before, cancelled, requested = run_in_transaction(
        database, 0, _cancel, ids)
    for task_id in requested:
        click.echo(
            f'Task {task_id} is running: its worker was asked to roll it '
            'back and mark it cancelled.')
    _report([i for i in ids if i not in requested], before, cancelled,
        'cancelled', NOT_CANCELLED)


def _finished_before(table, cutoff):
    return (table.state.in_(list(FINAL_STATES))
        & (table.finished_at < cutoff))


def _count_finished(cutoff):
    queue = Table('ir_queue')
    cursor = Transaction().connection.cursor()
    cursor.execute(*queue.select(
        Count(Literal('*')), where=_finished_before(queue, cutoff)))
    return cursor.fetchone()[0]


def _delete_batch(cutoff):
    queue, finished = Table('ir_queue'), Table('ir_queue')
    cursor = Transaction().connection.cursor()
    cursor.execute(*queue.delete(where=queue.id.in_(finished.select(
        finished.id, where=_finished_before(finished, cutoff),
        limit=CLEAN_BATCH))))
    return cursor.rowcount


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
        database, 0, _count_finished, cutoff, readonly=True)
    deleted = 0
    with click.progressbar(
            length=total, label='Deleting finished tasks',
            file=sys.stderr) as bar:
        while True:
            count = run_in_transaction(database, 0, _delete_batch, cutoff)
            deleted += count
            bar.update(count)
            if count < CLEAN_BATCH:
                break
    click.echo(
        f'Deleted {deleted} task(s) finished before '
        f'{format_time(cutoff)} UTC.')


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


def _add_commands():
    # Commands of their own module, kept apart to keep this one short.
    from .demo import demo
    main.add_command(demo)


_add_commands()

