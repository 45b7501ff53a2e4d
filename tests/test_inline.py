"""Without a worker, tasks run right after the enqueuing commit."""
import datetime
import json
import os

import pytest
from sql import Select
from sql.functions import Function

from trytond_queue.pool import Pool
from trytond_queue.queue.store import utcnow
from trytond_queue.transaction import Transaction


def tasks(env):
    """Return the rows of ir_queue as dictionaries, in id order."""
    with env.transaction():
        Queue = Pool().get('ir.queue')
        return Queue.read([t.id for t in Queue.search([])])


def log_names(env):
    """Return the names of the rows of test.log but targets, in order."""
    with env.transaction():
        Log = Pool().get('test.log')
        return [r.name for r in Log.search([('name', '!=', 'target')])]


def target():
    """Return a new record of test.log for a task to be called on.

    A task queued on no record at all is not called, as in Tryton.
    """
    record, = Pool().get('test.log').create([{'name': 'target'}])
    return record


def test_tasks_run_after_commit_in_enqueue_order(env):
    with env.transaction():
        Log = Pool().get('test.log')
        for name in ['first', 'second', 'third']:
            Log.__queue__.insert(target(), name)
        Log.create([{'name': 'caller'}])
        # Nothing runs before the caller commits.
        assert [r.name for r in Log.search([])] == ['target'] * 3 + [
            'caller']
    assert log_names(env) == ['caller', 'first', 'second', 'third']
    rows = tasks(env)
    assert [t['state'] for t in rows] == ['done'] * 3
    assert [t['attempts'] for t in rows] == [1] * 3
    assert all(t['finished_at'] >= t['dequeued_at'] for t in rows)
    assert all(t['worker'] is None for t in rows)


def test_tasks_run_after_each_commit_of_the_caller(env):
    with env.transaction() as transaction:
        Log = Pool().get('test.log')
        Log.__queue__.insert(target(), 'before commit')
        transaction.commit()
        Log.__queue__.insert(target(), 'after commit')
    assert log_names(env) == ['before commit', 'after commit']


def test_failing_task_is_recorded_for_a_retry(env):
    before = utcnow()
    with env.transaction():
        Log = Pool().get('test.log')
        Log.create([{'name': 'caller'}])
        Log.__queue__.insert(target(), 'before')
        failing = Log.__queue__.fail(target(), 'it broke')
        Log.__queue__.insert(target(), 'after')
    # The failed task's own insert is rolled back, nothing else is.
    assert log_names(env) == ['caller', 'before', 'after']
    rows = {t['id']: t for t in tasks(env)}
    task = rows.pop(failing)
    assert [t['state'] for t in rows.values()] == ['done', 'done']
    assert (task['state'], task['attempts']) == ('scheduled', 1)
    assert task['error'] == 'ValueError: it broke'
    assert 'Traceback' in task['traceback']
    assert 'it broke' in task['traceback']
    assert task['finished_at'] is None and task['worker'] is None
    # retry_delay is 0.05 s in the tests, with jitter of a quarter.
    assert (before + datetime.timedelta(seconds=0.0375)
        <= task['scheduled_at'] <= utcnow() + datetime.timedelta(
            seconds=0.0625))
    assert task['due_at'] == task['scheduled_at']


def test_failing_task_with_one_attempt_fails_for_good(env):
    with env.transaction(context={'queue_max_attempts': 1}):
        Log = Pool().get('test.log')
        Log.__queue__.fail(target())
    task, = tasks(env)
    assert (task['state'], task['attempts']) == ('failed', 1)
    assert task['error'] == 'ValueError: boom'
    assert task['finished_at'] is not None
    assert log_names(env) == []


def test_business_error_fails_the_task_at_once(env):
    with env.transaction():
        Log = Pool().get('test.log')
        Log.__queue__.refuse(target())
    task, = tasks(env)
    assert (task['state'], task['attempts'], task['max_attempts']) == (
        'failed', 1, 5)
    assert task['error'] == 'UserError: refused by a business rule'


def test_task_over_its_timeout_is_stopped_and_recorded(env):
    with env.transaction(context={'queue_timeout': 0.05}):
        Log = Pool().get('test.log')
        Log.__queue__.sleep(target(), 5)
        Log.__queue__.insert(target(), 'next')
    timed_out, following = tasks(env)
    assert timed_out['state'] == 'scheduled'
    assert timed_out['error'].startswith('TaskTimeout: ')
    assert following['state'] == 'done'
    assert log_names(env) == ['next']


def test_result_of_the_method_is_kept(env):
    with env.transaction():
        Log = Pool().get('test.log')
        Log.__queue__.answer(target())
        Log.__queue__.insert(target(), 'no result')
    answered, plain = tasks(env)
    assert json.loads(answered['result']) == {'answer': 42}
    assert plain['result'] is None


def test_scheduled_task_does_not_run_at_commit(env):
    context = {'queue_scheduled_at': datetime.timedelta(minutes=1)}
    with env.transaction():
        Log = Pool().get('test.log')
        with Transaction().set_context(context):
            Log.__queue__.insert(target(), 'later')
        Log.__queue__.insert(target(), 'now')
    assert [t['state'] for t in tasks(env)] == ['scheduled', 'done']
    assert log_names(env) == ['now']


def test_tasks_queued_by_a_task_also_run(env):
    with env.transaction():
        Seed = Pool().get('test.seed')
        records = Seed.create([{'value': 1}, {'value': 2}])
        Seed.__queue__.launch(records)
    assert [t['method'] for t in tasks(env)] == [
        'launch', 'process', 'process']
    assert [t['state'] for t in tasks(env)] == ['done'] * 3
    with env.transaction():
        assert [r.value for r in Pool().get('test.seed').search([])] == [
            42, 42]


def test_tasks_queued_by_tasks_run_in_enqueue_order(env, monkeypatch):
    with env.transaction():
        Log = Pool().get('test.log')

        def spawn(cls, records, name):
            cls.create([{'name': name}])
            if len(name) < 3:
                cls.__queue__.spawn(records, name + 'a')
                cls.__queue__.spawn(records, name + 'b')

        monkeypatch.setattr(
            Log, 'spawn', classmethod(spawn), raising=False)
        Log.__queue__.spawn(target(), 'x')
        Log.__queue__.spawn(target(), 'y')
    assert log_names(env) == [
        'x', 'y', 'xa', 'xb', 'ya', 'yb', 'xaa', 'xab', 'xba', 'xbb',
        'yaa', 'yab', 'yba', 'ybb']


@pytest.mark.timeout(60)
def test_long_chain_of_tasks_runs_to_its_end(env, monkeypatch):
    with env.transaction():
        Log = Pool().get('test.log')

        def chain(cls, records, left):
            if left:
                cls.__queue__.chain(records, left - 1)
            else:
                cls.create([{'name': 'end'}])

        monkeypatch.setattr(
            Log, 'chain', classmethod(chain), raising=False)
        Log.__queue__.chain(target(), 400)
    assert log_names(env) == ['end']
    assert {t['state'] for t in tasks(env)} == {'done'}


def test_failure_of_a_task_never_reaches_the_caller(env, caplog):
    with env.transaction():
        Log = Pool().get('test.log')
        Log.__queue__.fail(target())
        Log.__queue__.refuse(target())
    assert [t['state'] for t in tasks(env)] == ['scheduled', 'failed']
    assert any(
        r.levelname == 'ERROR' and 'refused' in r.getMessage()
        for r in caplog.records)


def test_tasks_queued_by_a_failing_task_are_dropped(env, monkeypatch):
    with env.transaction():
        Log = Pool().get('test.log')

        def queue_then_fail(cls, records):
            cls.__queue__.insert(records, 'orphan')
            raise ValueError('after queuing')

        monkeypatch.setattr(
            Log, 'queue_then_fail', classmethod(queue_then_fail),
            raising=False)
        Log.__queue__.queue_then_fail(target())
        Log.__queue__.insert(target(), 'neighbour')
    assert [(t['method'], t['state']) for t in tasks(env)] == [
        ('queue_then_fail', 'scheduled'), ('insert', 'done')]
    assert log_names(env) == ['neighbour']


def test_task_whose_run_breaks_down_is_given_back(env, monkeypatch):
    from trytond_queue.queue import inline

    def broken(*args, **kwargs):
        raise RuntimeError('the runner broke down')

    monkeypatch.setattr(inline, 'run_batch', broken)
    with env.transaction():
        Log = Pool().get('test.log')
        Log.create([{'name': 'caller'}])
        Log.__queue__.insert(target(), 'given back')
    task, = tasks(env)
    assert (task['state'], task['attempts'], task['worker']) == (
        'pending', 0, None)
    assert log_names(env) == ['caller']


class TerminateBackend(Function):
    __slots__ = ()
    _function = 'PG_TERMINATE_BACKEND'


def test_runner_reconnects_after_the_server_ends_its_session(pg_env):
    env = pg_env
    from trytond_queue.queue import inline
    with env.transaction():
        Pool().get('test.log').__queue__.insert(target(), 'first')
    identity = inline._identities[(os.getpid(), env.database_name)]
    # What a restart of the server does to the runner's idle session.
    with env.transaction() as transaction:
        transaction.connection.cursor().execute(*Select([
            TerminateBackend(identity.connection.get_backend_pid())]))
    with env.transaction():
        Pool().get('test.log').__queue__.insert(target(), 'second')
    assert log_names(env) == ['first', 'second']
    assert [t['state'] for t in tasks(env)] == ['done', 'done']
