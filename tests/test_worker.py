"""trytond-worker, as real processes, on SQLite and PostgreSQL."""
import datetime
import signal
import subprocess

import pytest

from trytond_queue.pool import Pool
from trytond_queue.transaction import Transaction

from .workers import (
    command,
    running_worker,
    task_states,
    wait_for,
    worker_mode,
)


def _enqueue_seed(env, count):
    with env.transaction():
        Seed = Pool().get('test.seed')
        records = Seed.create([{'value': 0}] * count)
        Seed.launch(records)


def _values(env):
    with env.transaction():
        Seed = Pool().get('test.seed')
        return [r.value for r in Seed.search([])]


def test_worker_runs_the_seed_example(env, tmp_path):
    worker_mode()
    _enqueue_seed(env, 50)
    assert task_states(env) == {'pending': 50}
    with running_worker(env, tmp_path, '-n', '2') as process:
        wait_for(lambda: task_states(env) == {'done': 50},
            message='50 tasks done')
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0
    assert _values(env) == [42] * 50


def test_worker_starts_a_scheduled_task_on_time(env, tmp_path):
    worker_mode()
    with running_worker(env, tmp_path, '-n', '1', '-t', '30'):
        with env.transaction(context={
                'queue_scheduled_at': datetime.timedelta(seconds=2)}):
            Log = Pool().get('test.log')
            task_id, = Log.__queue__.sleep([], 0, name='scheduled')
        wait_for(lambda: task_states(env) == {'done': 1}, timeout=15,
            message='the scheduled task')
    with env.transaction():
        Queue = Pool().get('ir.queue')
        task, = Queue.browse([task_id])
        Log = Pool().get('test.log')
        log, = Log.search([('name', '=', 'scheduled')])
        started = datetime.datetime.fromtimestamp(
            log.started, datetime.timezone.utc).replace(tzinfo=None)
        late = (started - task.scheduled_at).total_seconds()
        # The poll interval is 30 s: only the wake-up at the scheduled
        # time can start it this soon.
        assert 0 <= late < 1.0


def test_worker_records_failures_and_retries_with_backoff(env, tmp_path):
    worker_mode()
    with env.transaction(context={'queue_max_attempts': 3}):
        Log = Pool().get('test.log')
        task_id, = Log.__queue__.fail([], 'broken')
    with running_worker(env, tmp_path):
        wait_for(lambda: task_states(env) == {'failed': 1},
            message='the task to fail')
    with env.transaction():
        task, = Pool().get('ir.queue').browse([task_id])
        assert task.attempts == 3
        assert task.error == 'ValueError: broken'
        assert 'raise ValueError(message)' in task.traceback
        # Each attempt's row was rolled back with it.
        assert Pool().get('test.log').search_count([]) == 0


def test_worker_fails_a_user_error_at_once(env, tmp_path):
    worker_mode()
    with env.transaction():
        Log = Pool().get('test.log')
        task_id, = Log.__queue__.refuse([])
    with running_worker(env, tmp_path):
        wait_for(lambda: task_states(env) == {'failed': 1},
            message='the task to fail')
    with env.transaction():
        task, = Pool().get('ir.queue').browse([task_id])
        assert task.attempts == 1
        assert 'refused by a business rule' in task.error


def test_worker_serves_only_named_queues(env, tmp_path):
    worker_mode()
    with env.transaction(context={'queue_name': 'mail'}):
        Log = Pool().get('test.log')
        Log.__queue__.insert([], 'mail')
    with env.transaction(context={'queue_name': 'other'}):
        Pool().get('test.log').__queue__.insert([], 'other')
    with running_worker(env, tmp_path, '--name', 'mail'):
        wait_for(lambda: task_states(env) == {'done': 1, 'pending': 1},
            message='the mail task only')


def test_worker_stops_on_sigterm_after_running_tasks(env, tmp_path):
    worker_mode()
    with env.transaction():
        Log = Pool().get('test.log')
        for index in range(2):
            Log.__queue__.sleep([], 1.0, name=f'long {index}')
    with running_worker(env, tmp_path, '-n', '2') as process:
        # SQLite has one writer at a time: its tasks may run one after
        # the other.
        wanted = 2 if env.name == 'postgresql' else 1
        wait_for(lambda: task_states(env).get('running', 0) >= wanted,
            message='the tasks running')
        process.send_signal(signal.SIGTERM)
        assert process.wait(20) == 0
    with env.transaction():
        tasks = Pool().get('ir.queue').search([])
        # A task not started before the signal is left for later.
        assert all(
            t.state == 'done' or (t.state, t.attempts) == ('pending', 0)
            for t in tasks)
        assert 'done' in {t.state for t in tasks}


def test_worker_second_signal_gives_tasks_back_at_once(env, tmp_path):
    worker_mode()
    with env.transaction():
        Log = Pool().get('test.log')
        task_id, = Log.__queue__.sleep([], 30)
    with running_worker(env, tmp_path) as process:
        wait_for(lambda: task_states(env).get('running') == 1,
            message='the task running')
        process.send_signal(signal.SIGTERM)
        # Two signals sent before the manager runs would arrive as one.
        log = tmp_path / 'worker.log'
        wait_for(lambda: 'stopping' in log.read_text(),
            message='the manager stopping')
        process.send_signal(signal.SIGTERM)
        assert process.wait(20) == 0
    with env.transaction():
        task, = Pool().get('ir.queue').browse([task_id])
        assert (task.state, task.attempts) == ('pending', 0)


@pytest.mark.parametrize('argv, message', [
    (['-d', 'no_such_database'], 'does not exist'),
    (['--processes', '0'], '0 is not in the range'),
    ])
def test_worker_refuses_bad_input(env, tmp_path, argv, message):
    conf = env.config_file(tmp_path)
    result = subprocess.run(
        command('trytond-worker') + ['-c', conf, *argv],
        env=env.subprocess_env(), capture_output=True, text=True,
        timeout=60)
    assert result.returncode != 0
    assert message in result.stderr
    assert 'Traceback' not in result.stderr


def test_worker_refuses_when_worker_is_off(env, tmp_path):
    conf = env.config_file(tmp_path, queue__worker=False)
    result = subprocess.run(
        command('trytond-worker') + ['-c', conf, '-d', env.database_name],
        env=env.subprocess_env(), capture_output=True, text=True,
        timeout=60)
    assert result.returncode == 1
    assert 'Set "worker = True"' in result.stderr


def test_one_manager_serves_several_databases_fairly(env, tmp_path):
    from trytond_queue import backend
    worker_mode()
    other = env.database_name + '_other'
    database = backend.Database(other)
    if env.name == 'postgresql':
        database.create()
    try:
        Pool(other).init()
        with env.transaction():
            Log = Pool().get('test.log')
            for _ in range(300):
                Log.__queue__.insert_slowly([], 'busy', 0.01)
        with Transaction().start(other, 0):
            Log = Pool().get('test.log')
            for _ in range(5):
                Log.__queue__.insert([], 'quiet')
        with running_worker(env, tmp_path, '-n', '1', '-d', other):
            def other_done():
                with Transaction().start(other, 0, readonly=True):
                    Queue = Pool().get('ir.queue')
                    return Queue.search_count(
                        [('state', '=', 'done')]) == 5
            wait_for(other_done, message='the quiet database served')
            busy = task_states(env)
            # The busy database was not drained first.
            assert busy.get('done', 0) < 150, busy
    finally:
        backend.forget_databases(other)
        database.drop()


def test_two_managers_run_every_task_exactly_once(pg_env, tmp_path):
    env = pg_env
    worker_mode()
    with env.transaction():
        Log = Pool().get('test.log')
        for index in range(1000):
            Log.__queue__.insert([], f'task {index}')
    first, second = tmp_path / 'first', tmp_path / 'second'
    first.mkdir()
    second.mkdir()
    with running_worker(env, first, '-n', '2'), \
            running_worker(env, second, '-n', '2'):
        wait_for(lambda: task_states(env) == {'done': 1000}, timeout=60,
            message='every task done')
    with env.transaction(readonly=True):
        logs = Pool().get('test.log').search([])
        names = sorted(log.name for log in logs)
        pids = {log.pid for log in logs}
    assert names == sorted(f'task {i}' for i in range(1000))
    # Both managers took part.
    assert len(pids) >= 2


def test_max_recycles_the_worker_processes(env, tmp_path):
    worker_mode()
    with env.transaction():
        Log = Pool().get('test.log')
        for index in range(12):
            Log.__queue__.insert([], f'task {index}')
    with running_worker(env, tmp_path, '-n', '1', '--max', '4'):
        wait_for(lambda: task_states(env) == {'done': 12},
            message='every task done')
    with env.transaction(readonly=True):
        pids = {log.pid for log in Pool().get('test.log').search([])}
    # Each process ran at most 4 tasks before it was replaced.
    assert len(pids) >= 3


def test_worker_refuses_a_poll_interval_of_zero(env, tmp_path):
    conf = env.config_file(tmp_path, queue__poll_interval=0)
    result = subprocess.run(
        command('trytond-worker') + ['-c', conf, '-d', env.database_name],
        env=env.subprocess_env(), capture_output=True, text=True,
        timeout=60)
    assert result.returncode == 1
    assert '[queue] poll_interval = 0 is not valid' in result.stderr
