"""Batches of tasks: each task's guarantees hold inside a batch."""
import time

import pytest
from sql import Table

from trytond_queue.config import config
from trytond_queue.pool import Pool
from trytond_queue.queue import store
from trytond_queue.queue.identity import Identity
from trytond_queue.queue.runner import run_batch

from .workers import wait_for, worker_mode


def _claim_all(env):
    identity = Identity(env.database_name).open()
    return identity, identity.claim(100)


def _states(env):
    with env.transaction(readonly=True):
        return {t.id: t.state for t in Pool().get('ir.queue').search([])}


def test_failing_task_does_not_undo_its_neighbours(env):
    worker_mode()
    with env.transaction(context={'queue_max_attempts': 1}):
        Log = Pool().get('test.log')
        first, = Log.__queue__.insert([], 'first')
        failing, = Log.__queue__.fail([], 'broken')
        last, = Log.__queue__.insert([], 'last')
    identity, tasks = _claim_all(env)
    try:
        assert len(tasks) == 3
        assert run_batch(env.database_name, identity.id, tasks) == (2, 1)
    finally:
        identity.close()
    states = _states(env)
    assert [states[i] for i in (first, failing, last)] == [
        'done', 'failed', 'done']
    with env.transaction(readonly=True):
        names = sorted(
            log.name for log in Pool().get('test.log').search([]))
    # The failing task's own row went with its savepoint.
    assert names == ['first', 'last']


def test_task_after_a_deletion_in_its_batch_skips_deleted_records(env):
    worker_mode()
    with env.transaction():
        Log = Pool().get('test.log')
        log, = Log.create([{'name': 'doomed'}])
        Log.__queue__.delete([log])
        # Had the batch not looked again after the deletion, this call
        # would log the deleted record.
        Log.__queue__.record([log])
    identity, tasks = _claim_all(env)
    try:
        assert run_batch(env.database_name, identity.id, tasks) == (2, 0)
    finally:
        identity.close()
    assert set(_states(env).values()) == {'done'}
    with env.transaction(readonly=True):
        assert Pool().get('test.log').search_count([]) == 0


def test_batch_taken_over_by_a_rescuer_rolls_back(env):
    worker_mode()
    with env.transaction():
        Pool().get('test.log').__queue__.insert([], 'once')
    identity, tasks = _claim_all(env)
    try:
        # A rescuer gave the task to another worker meanwhile.
        with env.transaction() as transaction:
            queue = Table('ir_queue')
            transaction.connection.cursor().execute(*queue.update(
                [queue.worker], [identity.id + 1000]))
        from trytond_queue.exceptions import TasksTakenOver
        try:
            run_batch(env.database_name, identity.id, tasks)
        except TasksTakenOver:
            pass
        else:
            raise AssertionError('the batch was not rolled back')
    finally:
        identity.close()
    with env.transaction(readonly=True):
        assert Pool().get('test.log').search_count([]) == 0


@pytest.mark.parametrize('history', [0, 200_000])
def test_claim_uses_the_claim_index_whatever_the_history(pg_env, history):
    env = pg_env
    worker_mode()
    queue = Table('ir_queue')
    identity = Identity(env.database_name).open()
    try:
        cursor = identity.connection.cursor()
        # Statistics of an empty table, as a new queue has, then
        # 10,000 pending tasks, with or without a long history.
        cursor.execute('ANALYZE ir_queue')
        cursor.execute(
            "INSERT INTO ir_queue (name, model, method, state, priority, "
            "enqueued_at, due_at, attempts, max_attempts, finished_at) "
            "SELECT 'default', 'test.log', 'insert', "
            "CASE WHEN i <= %s THEN 'done' ELSE 'pending' END, 0, "
            "now(), now(), 0, 5, now() "
            "FROM generate_series(1, %s) AS i", (history, history + 10000))
        from sql import Flavor
        Flavor.set(identity.database.flavor)
        query = store.claim_query(identity.database, identity.id, (), 50)
        text, params = tuple(query)
        cursor.execute('EXPLAIN ' + text, params)
        plan = '\n'.join(row for row, in cursor)
    finally:
        with env.transaction() as transaction:
            transaction.connection.cursor().execute(*queue.delete())
        identity.close()
    assert 'Index Scan using ir_queue_claim_index' in plan, plan
    assert 'Sort' not in plan, plan
    assert 'Seq Scan on ir_queue' not in plan, plan


@pytest.mark.parametrize('size', [1, 5])
def test_claim_takes_no_more_than_asked(env, size):
    worker_mode()
    identity = Identity(env.database_name).open()
    try:
        if env.name == 'postgresql':
            # The statistics of an empty table once made PostgreSQL run
            # the claim's subquery once per row it updated.
            identity.connection.cursor().execute('ANALYZE ir_queue')
        with env.transaction():
            Log = Pool().get('test.log')
            for _ in range(300):
                Log.__queue__.insert([], 'many')
        assert len(identity.claim(size)) == size
    finally:
        identity.close()


def test_tasks_of_a_dead_worker_are_given_back_by_any_process(env):
    from trytond_queue.queue.identity import rescue_dead_workers
    worker_mode()
    with env.transaction(context={'queue_max_attempts': 1}):
        Log = Pool().get('test.log')
        for name in ('first', 'second'):
            Log.__queue__.insert([], name)
    dead, tasks = _claim_all(env)
    assert len(tasks) == 2
    # Its lock goes with its connection, as when its process dies.
    dead.close(forget=False)
    rescuer = Identity(env.database_name).open()
    try:
        alive, _ = _claim_all(env)
        given_back = []
        try:
            # The server drops the lock of a closed session a moment
            # later.
            wait_for(lambda: given_back.extend(rescue_dead_workers(
                rescuer.connection, rescuer.database)) or given_back,
                message='the tasks given back')
        finally:
            alive.close()
    finally:
        rescuer.close()
    assert sorted(given_back) == sorted(t.id for t in tasks)
    with env.transaction(readonly=True):
        rescued = Pool().get('ir.queue').search([])
        # The attempt was spent at the claim: with one allowed, they fail.
        assert {(t.state, t.rescues) for t in rescued} == {('failed', 1)}
        assert all('worker running the task died' in t.error
            for t in rescued)


def test_serialization_failure_is_retried_without_spending_an_attempt(
        pg_env):
    env = pg_env
    worker_mode()
    with env.transaction(context={'queue_max_attempts': 1}):
        Log = Pool().get('test.log')
        log, = Log.create([{'name': 'untouched'}])
        task_id, = Log.__queue__.conflict([], log.id)
    identity = Identity(env.database_name).open()
    try:
        tasks = identity.claim(10)
        # The batch's snapshot predates the other transaction's write.
        assert run_batch(env.database_name, identity.id, tasks) == (0, 0)
        with env.transaction(readonly=True):
            task, = Pool().get('ir.queue').browse([task_id])
            assert (task.state, task.attempts) == ('pending', 0)
        tasks = identity.claim(10)
        assert run_batch(env.database_name, identity.id, tasks) == (1, 0)
    finally:
        identity.close()
    with env.transaction(readonly=True):
        task, = Pool().get('ir.queue').browse([task_id])
        assert (task.state, task.attempts) == ('done', 1)
        log, = Pool().get('test.log').browse([log.id])
        assert (log.name, log.args) == ('touched', {'written': True})


def test_failed_attempts_back_off_then_retry_runs_the_task_again(env):
    from trytond_queue.queue import admin, inline
    config.set('queue', 'retry_delay', '0.2')
    with env.transaction(context={'queue_max_attempts': 2}):
        task_id, = Pool().get('test.log').__queue__.fail([], 'broken')

    def read():
        with env.transaction(readonly=True):
            task, = Pool().get('ir.queue').browse([task_id])
            return (task.state, task.attempts, task.dequeued_at,
                task.scheduled_at)
    # Run at commit: the first attempt failed and waits for its retry.
    state, attempts, dequeued_at, scheduled_at = read()
    assert (state, attempts) == ('scheduled', 1)
    delay = (scheduled_at - dequeued_at).total_seconds()
    assert 0.2 * 0.75 <= delay <= 0.2 * 1.25 + 0.1
    assert inline.run_due(env.database_name) == (0, 0)
    time.sleep(0.35)
    assert inline.run_due(env.database_name) == (0, 1)
    assert read()[:2] == ('failed', 2)
    admin.run_change(env.database_name, admin.retry_tasks, [task_id])
    assert read()[:2] == ('pending', 0)
    assert inline.run_due(env.database_name) == (0, 0)
    assert read()[:2] == ('scheduled', 1)


def test_run_due_gives_back_the_tasks_of_dead_processes(env):
    from trytond_queue.queue import inline
    worker_mode()
    with env.transaction():
        task_id, = Pool().get('test.log').__queue__.insert([], 'orphan')
    dead, tasks = _claim_all(env)
    assert [t.id for t in tasks] == [task_id]
    dead.close(forget=False)
    # The server drops the lock of a closed session a moment later.
    wait_for(lambda: inline.run_due(env.database_name) == (1, 0),
        message='the orphan run')
    assert _states(env) == {task_id: 'done'}


def test_serialization_failure_at_commit_is_retried_at_once(pg_env):
    env = pg_env
    with env.transaction():
        Log = Pool().get('test.log')
        log, = Log.create([{'name': 'untouched'}])
        task_id, = Log.__queue__.conflict([], log.id)
    with env.transaction(readonly=True):
        task, = Pool().get('ir.queue').browse([task_id])
        assert (task.state, task.attempts) == ('done', 1)


def test_failures_of_two_tasks_in_a_row_are_both_recorded(env):
    worker_mode()
    with env.transaction(context={'queue_max_attempts': 1}):
        Log = Pool().get('test.log')
        first, = Log.__queue__.fail([], 'first')
        second, = Log.__queue__.fail([], 'second')
    identity, tasks = _claim_all(env)
    try:
        assert run_batch(env.database_name, identity.id, tasks) == (0, 2)
    finally:
        identity.close()
    # The second rollback must not undo the record of the first failure.
    assert _states(env) == {first: 'failed', second: 'failed'}
