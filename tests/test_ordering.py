"""Execution order, deadlines and unique tasks, as the claim sees them."""
import datetime
import threading
import time

from trytond_queue.pool import Pool
from trytond_queue.queue.identity import Identity
from trytond_queue.transaction import run_in_transaction

from .workers import worker_mode


def _queue(env, name, **context):
    context = {f'queue_{k}': v for k, v in context.items()}
    with env.transaction(context=context):
        Log = Pool().get('test.log')
        task_id, = Log.__queue__.insert([], name)
    return task_id


def _claim_names(env, identity, limit=100):
    tasks = identity.claim(limit)
    with env.transaction(readonly=True):
        Queue = Pool().get('ir.queue')
        names = {t.id: t.data['args'][0] for t in Queue.browse(
            [t.id for t in tasks])}
    return [names[t.id] for t in tasks]


def test_claim_orders_by_priority_then_deadline_then_enqueue(env):
    worker_mode()
    minutes = datetime.timedelta(minutes=1)
    _queue(env, 'plain first')
    _queue(env, 'low priority', priority=1)
    _queue(env, 'deadline in an hour', expected_at=60 * minutes)
    _queue(env, 'high priority', priority=-1)
    _queue(env, 'overdue deadline', expected_at=-minutes)
    _queue(env, 'plain second')
    identity = Identity(env.database_name).open()
    try:
        assert _claim_names(env, identity) == [
            'high priority', 'overdue deadline', 'plain first',
            'plain second', 'deadline in an hour', 'low priority']
    finally:
        identity.close()


def test_overdue_deadline_is_not_starved_by_plain_tasks(env):
    worker_mode()
    _queue(env, 'before')
    _queue(env, 'deadline', expected_at=datetime.timedelta(seconds=0.3))
    identity = Identity(env.database_name).open()
    try:
        assert _claim_names(env, identity, 1) == ['before']
        time.sleep(0.4)
        for index in range(3):
            _queue(env, f'stream {index}')
        assert _claim_names(env, identity, 2) == ['deadline', 'stream 0']
    finally:
        identity.close()


def test_unique_task_is_added_once_by_concurrent_transactions(env):
    worker_mode()
    results, errors = [], []
    barrier = threading.Barrier(16)

    def queue_it():
        def call():
            Log = Pool().get('test.log')
            return Log.__queue__.insert([], 'once')
        try:
            barrier.wait(10)
            results.append(run_in_transaction(
                env.database_name, 0, call, retries=50,
                context={'queue_unique': True}))
        except Exception as exception:
            errors.append(exception)

    threads = [threading.Thread(target=queue_it) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors
    assert len(results) == 16
    assert len({tuple(r) for r in results}) == 1
    with env.transaction(readonly=True):
        assert Pool().get('ir.queue').search_count([]) == 1


def test_unique_task_differs_by_arguments(env):
    worker_mode()
    with env.transaction(context={'queue_unique': True}):
        Log = Pool().get('test.log')
        first = Log.__queue__.insert([], 'a')
        again = Log.__queue__.insert([], 'a')
        other = Log.__queue__.insert([], 'b')
    assert first == again != other
