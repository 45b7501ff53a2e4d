"""The pages of the dashboard: each reads in one transaction, then renders.

A view takes the dashboard and the request; the dashboard has already
checked the session and, for a POST, its anti-forgery token.  Actions
answer with a redirection to the page they came from (post, redirect,
get), carrying a notice as fixed codes rather than text, so that a link
cannot make the dashboard say anything else.
"""
import logging
import math

from prometheus_client import CONTENT_TYPE_LATEST
from werkzeug.exceptions import BadRequest, NotFound
from werkzeug.utils import redirect
from werkzeug.wrappers import Response

from .. import backend
from ..commands.common import first_line, format_time
from ..queue import admin
from ..queue.model import STATES, WAITING_STATES
from ..queue.store import utcnow
from ..transaction import Transaction, run_in_transaction
from . import metrics as metrics_module
from . import queries

__all__ = [
    'overview', 'tasks', 'task', 'retry', 'cancel', 'retry_failed',
    'workers', 'metrics', 'health', 'chart', 'FILTERS']

logger = logging.getLogger(__name__)

# The sizes of the charts in the units of their view box: the chart of
# all queues is drawn about at the size it is shown, so that its labels
# keep the size of the text; those of the queues are thumbnails.
CHART_SIZE = (1160, 150)
THUMBNAIL_SIZE = (600, 100)
# The longest text kept from a filter field: names are short, and a
# longer value can only come from a mistake or a probe.
FILTER_LENGTH = 200
REFRESH_CHOICES = (0, 5, 10, 30)
NOTICES = {
    'retried': ('ok', 'The task is pending again; its attempts start '
        'from zero.'),
    'already-pending': ('info', 'The task is already pending.'),
    'cancelled': ('ok', 'The task is cancelled: it will not run.'),
    'already-cancelled': ('info', 'The task is already cancelled.'),
    'cancel-asked': ('info', 'The task is running: its worker was asked '
        'to roll it back and mark it cancelled.'),
    'conflict': ('error', 'A task with the same unique key was queued '
        'meanwhile: retry again.'),
    }


def age(seconds):
    """Return a duration in seconds as a short text, or a dash."""
    if seconds is None:
        return '\N{EM DASH}'
    seconds = int(max(seconds, 0))
    minutes, seconds = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    if not minutes and not hours:
        return f'{seconds} s'
    if not hours:
        return f'{minutes} min {seconds:02d} s'
    if hours < 48:
        return f'{hours} h {minutes:02d} min'
    return f'{hours // 24} d {hours % 24} h'


def ago(value, now):
    """Return how long ago a time was, or a dash."""
    if value is None:
        return '\N{EM DASH}'
    return age((now - value).total_seconds()) + ' ago'


def number(value):
    """Return an integer with thin separators of thousands."""
    return f'{value:,}'.replace(',', '\N{THIN SPACE}')


FILTERS = {
    'age': age, 'ago': ago, 'utc': format_time, 'first_line': first_line,
    'number': number,
    }


def _nice_ceiling(value):
    """Return the smallest of 1, 2, 5 times a power of ten >= value."""
    if value <= 1:
        return 1
    power = 10 ** math.floor(math.log10(value))
    return next(m * power for m in (1, 2, 5, 10) if m * power >= value)


def chart(done, failed, size=THUMBNAIL_SIZE):
    """Return the geometry of a bar chart of tasks finished per minute."""
    width, height = size
    count = len(done)
    top = _nice_ceiling(max(
        (d + f for d, f in zip(done, failed)), default=0))
    slot = width / count
    bars = []
    for index, (ok, bad) in enumerate(zip(done, failed)):
        if not ok and not bad:
            continue
        # A bar of a few tasks beside one of thousands stays visible.
        ok_height = max(ok / top * height, 1.5) if ok else 0
        bad_height = max(bad / top * height, 1.5) if bad else 0
        minutes = count - index - 1
        bars.append({
            'x': round(index * slot + 1, 2),
            'width': round(max(slot - 2, 1), 2),
            'done_y': round(height - ok_height, 2),
            'done_height': round(ok_height, 2),
            'failed_y': round(height - ok_height - bad_height, 2),
            'failed_height': round(bad_height, 2),
            'title': (
                f'{minutes} min ago: {ok} done, {bad} failed' if minutes
                else f'this minute: {ok} done, {bad} failed'),
            })
    return {
        'bars': bars, 'top': top, 'width': width, 'height': height,
        'done': sum(done), 'failed': sum(failed), 'minutes': count}


def _notice(request):
    code = request.args.get('notice')
    if code in NOTICES:
        kind, text = NOTICES[code]
        return {'kind': kind, 'text': text}
    state = request.args.get('state', '')
    if code == 'not-retried' and state in admin.WHY_NOT_RETRIED:
        return {'kind': 'error',
            'text': f'The task {admin.WHY_NOT_RETRIED[state]}.'}
    if code == 'not-cancelled' and state in admin.WHY_NOT_CANCELLED:
        return {'kind': 'error',
            'text': f'The task {admin.WHY_NOT_CANCELLED[state]}.'}
    if code == 'bulk':
        retried = request.args.get('retried', 0, type=int)
        left = request.args.get('left', 0, type=int)
        text = f'{retried} failed task(s) pending again.'
        if left:
            text += (
                f' {left} left as they are: a waiting task has the same '
                'unique key.')
        return {'kind': 'ok' if retried or not left else 'info',
            'text': text}
    return None


def _refresh(request):
    value = request.args.get('refresh', 0, type=int)
    return value if value in REFRESH_CHOICES else 0


def overview(app, request):
    """Show the figures and the chart of each queue."""
    now = utcnow()
    with Transaction().start(
            app.database_name, 0, readonly=True) as transaction:
        cursor = transaction.connection.cursor()
        figures, total = queries.queue_figures(cursor, now)
        series = queries.throughput(cursor, now)
    minutes = queries.CHART_MINUTES
    charts = {
        name: chart(s['done'], s['failed']) for name, s in series.items()}
    overall = {'done': [0] * minutes, 'failed': [0] * minutes}
    for values in series.values():
        for kind, counts in overall.items():
            counts[:] = [a + b for a, b in zip(counts, values[kind])]
    idle = chart([0] * minutes, [0] * minutes)
    overall = chart(overall['done'], overall['failed'], CHART_SIZE)
    return app.render(
        request, 'overview.html', page='overview', now=now,
        figures=figures, total=total, charts=charts, idle=idle,
        overall=overall, states=STATES, notice=_notice(request),
        refresh=_refresh(request), refresh_choices=REFRESH_CHOICES)


def _filters(request):
    filters = {
        name: request.args.get(key, '').strip()[:FILTER_LENGTH]
        for key, name in (('queue', 'name'), ('state', 'state'),
            ('model', 'model'), ('method', 'method'))}
    if filters['state'] and filters['state'] not in STATES:
        raise BadRequest(
            f'There is no state {filters["state"]!r}: choose one of '
            f'{", ".join(STATES)}.')
    return filters


def tasks(app, request):
    """List the tasks that match the filters, newest first, by pages."""
    filters = _filters(request)
    before = request.args.get('before', type=int)
    after = request.args.get('after', type=int)
    with Transaction().start(
            app.database_name, 0, readonly=True) as transaction:
        rows, newer, older = queries.task_page(
            transaction.connection.cursor(), filters, before=before,
            after=after)
    arguments = {
        key: filters[name] for key, name in (('queue', 'name'),
            ('state', 'state'), ('model', 'model'), ('method', 'method'))
        if filters[name]}
    pages = {}
    if rows and newer:
        pages['newer'] = app.url(
            request, 'tasks', after=rows[0]['id'], **arguments)
    if rows and older:
        pages['older'] = app.url(
            request, 'tasks', before=rows[-1]['id'], **arguments)
    if (before or after) and not rows:
        pages['newest'] = app.url(request, 'tasks', **arguments)
    return app.render(
        request, 'tasks.html', page='tasks', rows=rows, filters=arguments,
        states=STATES, pages=pages, notice=_notice(request))


def task(app, request, task_id):
    """Show everything about a task, with the actions it allows."""
    with Transaction().start(app.database_name, 0, readonly=True):
        found = queries.read_task(task_id)
    if found is None:
        raise NotFound(f'There is no task {task_id} in this database.')
    return app.render(
        request, 'task.html', page='tasks', task=found,
        can_retry=found['state'] in admin.RETRYABLE_STATES,
        can_cancel=found['state'] in WAITING_STATES or (
            found['state'] == 'running'
            and backend.Database(app.database_name).has_channel),
        notice=_notice(request))


def _back(app, request, task_id, notice, **values):
    return redirect(app.url(
        request, 'task', task_id=task_id, notice=notice, **values), 303)


def retry(app, request, task_id):
    """Make a failed, cancelled or scheduled task pending again."""
    changed = admin.run_change(
        app.database_name, admin.retry_tasks, [task_id])
    if changed is None:
        return _back(app, request, task_id, 'conflict')
    before, after = changed
    state = before.get(task_id)
    if state is None:
        raise NotFound(f'There is no task {task_id} in this database.')
    if state in admin.RETRYABLE_STATES and after.get(task_id) == 'pending':
        logger.info(
            '%s/%s: retried from the dashboard', app.database_name, task_id)
        return _back(app, request, task_id, 'retried')
    if state == 'pending':
        return _back(app, request, task_id, 'already-pending')
    return _back(app, request, task_id, 'not-retried', state=state)


def cancel(app, request, task_id):
    """Cancel a waiting task, or ask the worker of a running one."""
    before, cancelled, requested = run_in_transaction(
        app.database_name, 0, admin.cancel_tasks, [task_id])
    state = before.get(task_id)
    if state is None:
        raise NotFound(f'There is no task {task_id} in this database.')
    if task_id in requested:
        logger.info(
            '%s/%s: cancel of the running task asked from the dashboard',
            app.database_name, task_id)
        return _back(app, request, task_id, 'cancel-asked')
    if task_id in cancelled:
        logger.info(
            '%s/%s: cancelled from the dashboard', app.database_name,
            task_id)
        return _back(app, request, task_id, 'cancelled')
    if state == 'cancelled':
        return _back(app, request, task_id, 'already-cancelled')
    return _back(app, request, task_id, 'not-cancelled', state=state)


def retry_failed(app, request):
    """Make every failed task, or those of a queue, pending again."""
    queue = request.form.get('queue', '').strip()[:FILTER_LENGTH] or None
    back = request.form.get('back')
    changed = admin.run_change(
        app.database_name, admin.retry_failed, queue)
    values = {'notice': 'conflict'}
    if changed is not None:
        retried, left, _ = changed
        logger.info(
            '%s: %d failed task(s) of %s retried from the dashboard',
            app.database_name, retried, queue or 'every queue')
        values = {'notice': 'bulk', 'retried': retried, 'left': left}
    if back == 'tasks':
        return redirect(app.url(
            request, 'tasks', state='failed', **values,
            **({'queue': queue} if queue else {})), 303)
    return redirect(app.url(request, 'overview', **values), 303)


def workers(app, request):
    """Show the worker processes alive, grouped by their manager."""
    with Transaction().start(
            app.database_name, 0, readonly=True) as transaction:
        rows = admin.workers(
            transaction.connection.cursor(), transaction.database)
    alive = [r for r in rows if r['alive']]
    return app.render(
        request, 'workers.html', page='workers',
        groups=queries.group_workers(alive), alive=len(alive),
        dead=len(rows) - len(alive))


def metrics(app, request):
    """Answer the metrics in the Prometheus text format."""
    return Response(
        metrics_module.exposition(app.registry),
        content_type=CONTENT_TYPE_LATEST)


def health(app, request):
    """Answer ok while the database answers, 503 otherwise."""
    try:
        with Transaction().start(
                app.database_name, 0, readonly=True) as transaction:
            queries.database_answers(transaction.connection.cursor())
    except Exception:
        # Whatever the cause, the load balancer only needs the answer;
        # the log keeps the cause.
        logger.warning(
            '%s: health check failed', app.database_name, exc_info=True)
        return Response('unavailable', 503, mimetype='text/plain')
    return Response('ok', mimetype='text/plain')
