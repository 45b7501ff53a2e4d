"""The administration of tasks shared by the command line and dashboard."""
import datetime
import select

import pytest

from trytond_queue import backend
from trytond_queue.pool import Pool
from trytond_queue.queue import admin
from trytond_queue.queue.identity import Identity
from trytond_queue.queue.notify import CANCEL_CHANNEL, listen
from trytond_queue.queue.store import utcnow
from trytond_queue.transaction import run_in_transaction

from .tasks import add_task
from .test_commands import read_tasks

HOUR = datetime.timedelta(hours=1)
DAY = datetime.timedelta(days=1)


def run(env, function, *args):
    """Call an admin function in a transaction of its own."""
    return run_in_transaction(env.database_name, 0, function, *args)


def test_queue_figures_count_states_and_delays_per_queue(env):
    now = utcnow()
    add_task(env, enqueued_at=now - HOUR)
    add_task(env, 'running', name='mail', expected_at=now - HOUR)
    add_task(env, 'done', name='mail', expected_at=now - 2 * HOUR,
        finished_at=now)

    with env.transaction() as transaction:
        figures = admin.queue_figures(transaction.connection.cursor(), now)
    total = admin.total_figures(figures)

    default, mail = figures
    assert (default['queue'], default['pending']) == ('default', 1)
    assert 3600 <= default['oldest_pending_age'] < 3700
    assert (mail['queue'], mail['running'], mail['done']) == ('mail', 1, 1)
    assert (mail['overdue'], mail['late']) == (1, 1)
    assert mail['oldest_pending_age'] is None
    assert total['queue'] == 'total'
    assert (total['pending'], total['running'], total['done']) == (1, 1, 1)
    assert total['oldest_pending_age'] == default['oldest_pending_age']


def test_total_figures_of_no_queue_are_zero():
    total = admin.total_figures([])

    assert total['pending'] == total['late'] == 0
    assert total['oldest_pending_age'] is None


def test_read_task_returns_every_field_with_the_call(env):
    task_id = add_task(env, 'failed', error='ValueError: boom')

    with env.transaction():
        task = admin.read_task(task_id)
        missing = admin.read_task(task_id + 1000)

    assert (task['id'], task['state'], task['error']) == (
        task_id, 'failed', 'ValueError: boom')
    assert task['data']['method'] == 'record'
    assert missing is None


def test_retry_tasks_reports_the_states_before_and_after(env):
    failed = add_task(env, 'failed', attempts=5)
    running = add_task(env, 'running', attempts=1)

    before, after = run(env, admin.retry_tasks, [failed, running, 999999])

    assert before == {failed: 'failed', running: 'running'}
    assert after == {failed: 'pending', running: 'running'}
    assert read_tasks(env, [failed], ['attempts']) == {
        failed: {'attempts': 0}}


def test_retry_tasks_retries_a_scheduled_unique_task_before_its_twin(env):
    scheduled = add_task(
        env, 'scheduled', unique_key='k', scheduled_at=utcnow() + DAY)
    failed = add_task(env, 'failed', unique_key='k')

    before, after = run(env, admin.retry_tasks, [scheduled, failed])

    assert after == {scheduled: 'pending', failed: 'failed'}


def test_retry_tasks_leaves_twins_when_the_first_is_not_the_waiting(env):
    failed = add_task(env, 'failed', unique_key='k')
    scheduled = add_task(
        env, 'scheduled', unique_key='k', scheduled_at=utcnow() + DAY)
    other = add_task(env, 'cancelled', unique_key='other')

    before, after = run(env, admin.retry_tasks, [failed, scheduled, other])

    # The failed task would be a second waiting copy of its key; the
    # scheduled one is left too, since the first of its key is retried
    # before it.
    assert after == {
        failed: 'failed', scheduled: 'scheduled', other: 'pending'}


def test_count_failed_counts_one_queue_or_all(env):
    add_task(env, 'failed', name='mail')
    add_task(env, 'failed')
    add_task(env, 'cancelled', name='mail')

    with env.transaction():
        assert admin.count_failed('mail') == 1
        assert admin.count_failed() == 2


def test_retry_failed_goes_through_the_tasks_by_batches_of_ids(env):
    ids = [add_task(env, 'failed', name='mail') for _ in range(5)]
    other = add_task(env, 'failed')

    batches = []
    after = 0
    while after is not None:
        retried, left, after = run(
            env, admin.retry_failed, 'mail', after, 2)
        batches.append((retried, left, after))

    assert batches == [
        (2, 0, ids[1]), (2, 0, ids[3]), (1, 0, ids[4]), (0, 0, None)]
    states = read_tasks(env, ids + [other], ['state'])
    assert {states[i]['state'] for i in ids} == {'pending'}
    assert states[other] == {'state': 'failed'}


def test_retry_failed_leaves_the_twin_of_a_task_retried_before(env):
    first = add_task(env, 'failed', unique_key='k1')
    second = add_task(env, 'failed', unique_key='k1')

    by_batches = [
        run(env, admin.retry_failed, None, 0, 1),
        run(env, admin.retry_failed, None, first, 1),
        ]

    assert by_batches == [(1, 0, first), (0, 1, second)]
    assert read_tasks(env, [first, second], ['state']) == {
        first: {'state': 'pending'}, second: {'state': 'failed'}}


def test_retry_failed_without_limit_takes_every_failed_task(env):
    ids = [add_task(env, 'failed') for _ in range(3)]

    assert run(env, admin.retry_failed) == (3, 0, ids[-1])
    assert run(env, admin.retry_failed) == (0, 0, None)


def test_cancel_tasks_cancels_the_waiting_tasks_only(env):
    pending = add_task(env)
    scheduled = add_task(env, 'scheduled', scheduled_at=utcnow() + DAY)
    running = add_task(env, 'running')
    done = add_task(env, 'done')

    before, cancelled, requested = run(
        env, admin.cancel_tasks, [pending, scheduled, running, done])

    assert before == {pending: 'pending', scheduled: 'scheduled',
        running: 'running', done: 'done'}
    assert cancelled == {pending, scheduled}
    # Only PostgreSQL can reach the manager of a running task.
    assert requested == ([running] if env.name == 'postgresql' else [])
    states = read_tasks(env, [pending, scheduled, running, done], ['state'])
    assert [s['state'] for s in states.values()] == [
        'cancelled', 'cancelled', 'running', 'done']


def test_cancel_tasks_notifies_the_manager_of_a_running_task(pg_env):
    running = add_task(pg_env, 'running')
    connection = backend.Database(pg_env.database_name).connect()
    try:
        listen(connection, CANCEL_CHANNEL)

        run(pg_env, admin.cancel_tasks, [running])

        assert select.select([connection], [], [], 5)[0]
        connection.poll()
        assert [(n.channel, n.payload) for n in connection.notifies] == [
            (CANCEL_CHANNEL, str(running))]
    finally:
        connection.close()


def test_delete_finished_deletes_old_finished_tasks_by_batches(env):
    old = utcnow() - 2 * DAY
    for state in ['done', 'failed', 'cancelled']:
        add_task(env, state, finished_at=old)
    recent = add_task(env, 'done')
    waiting = add_task(env, enqueued_at=old)
    cutoff = utcnow() - DAY

    with env.transaction():
        counted = admin.count_finished(cutoff)
    deleted = [run(env, admin.delete_finished, cutoff, 2) for _ in range(3)]

    assert counted == 3
    assert deleted == [2, 1, 0]
    with env.transaction():
        Queue = Pool().get('ir.queue')
        assert sorted(t.id for t in Queue.search([])) == [recent, waiting]


def test_workers_tell_the_living_from_the_dead(env):
    dead = Identity(env.database_name).open()
    dead.close(forget=False)
    alive = Identity(env.database_name, queues=['mail', 'sms']).open()
    try:
        with env.transaction() as transaction:
            rows = admin.workers(
                transaction.connection.cursor(), transaction.database)
    finally:
        alive.close()

    assert [(r['id'], r['alive']) for r in rows] == [
        (dead.id, False), (alive.id, True)]
    assert rows[1]['queues'] == 'mail,sms'
    assert isinstance(rows[1]['started_at'], datetime.datetime)
    assert rows[1]['running'] is None


def _queue_twins():
    now = utcnow()
    Pool().get('ir.queue').create([
        {'name': 'default', 'model': 'test.log', 'method': 'record',
            'state': 'pending', 'unique_key': 'twin', 'attempts': 0,
            'enqueued_at': now, 'due_at': now}
        for _ in range(2)])


def test_run_change_answers_none_to_a_unique_conflict(env):
    assert admin.run_change(env.database_name, _queue_twins) is None
    assert admin.run_change(env.database_name, admin.count_failed) == 0


def test_run_change_lets_other_errors_through(env):
    def fail():
        raise ValueError('not a conflict')

    with pytest.raises(ValueError, match='not a conflict'):
        admin.run_change(env.database_name, fail)
