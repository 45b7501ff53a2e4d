"""What production does to workers, done to real worker processes."""
import os
import random
import signal
import subprocess
import time

import psycopg2

from trytond_queue.pool import Pool

from .workers import (
    command,
    running_worker,
    task_states,
    wait_for,
    worker_mode,
)


def _queue(env, method, count, *args, context=None):
    with env.transaction(context=context):
        Log = Pool().get('test.log')
        return [getattr(Log.__queue__, method)([], *args)[0]
            for _ in range(count)]


def _tasks(env, ids):
    with env.transaction(readonly=True):
        return {
            t.id: (t.state, t.attempts, t.error)
            for t in Pool().get('ir.queue').browse(ids)}


def _log_names(env):
    with env.transaction(readonly=True):
        return [log.name for log in Pool().get('test.log').search([])]


def _worker_pids(env):
    """Return the pids of the worker processes (not the managers)."""
    with env.transaction(readonly=True):
        Worker = Pool().get('ir.queue.worker')
        return [w.pid for w in Worker.search([('manager', '!=', None)])]


def test_crashing_task_spends_its_attempts_only(env, tmp_path):
    worker_mode()
    crash, = _queue(env, 'crash', 1, context={'queue_max_attempts': 3})
    others = _queue(env, 'insert', 20, 'neighbour')
    with running_worker(env, tmp_path, '-n', '2'):
        wait_for(
            lambda: _tasks(env, [crash])[crash][0] == 'failed',
            message='the crashing task to fail')
        wait_for(lambda: task_states(env) == {'failed': 1, 'done': 20},
            message='the neighbours to finish')
    state, attempts, error = _tasks(env, [crash])[crash]
    assert attempts == 3
    assert 'exited with code 3' in error
    assert all(a == 1 for _, a, _ in _tasks(env, others).values())
    assert sorted(_log_names(env)) == ['neighbour'] * 20


def test_hung_task_is_stopped_by_its_timeout(env, tmp_path):
    worker_mode()
    hung, = _queue(env, 'sleep', 1, 60, context={
        'queue_timeout': 0.5, 'queue_max_attempts': 2})
    after = _queue(env, 'insert', 3, 'after')
    with running_worker(env, tmp_path, '-n', '1'):
        wait_for(lambda: task_states(env) == {'failed': 1, 'done': 3},
            timeout=30, message='the hung task to fail')
    state, attempts, error = _tasks(env, [hung])[hung]
    assert (state, attempts) == ('failed', 2)
    assert 'TaskTimeout' in error
    assert sorted(_log_names(env)) == ['after'] * 3
    assert all(s == 'done' for s, _, _ in _tasks(env, after).values())


def test_long_sql_statement_is_cancelled_by_the_server(pg_env, tmp_path):
    env = pg_env
    worker_mode()
    slow, = _queue(env, 'sql_sleep', 1, 30, context={
        'queue_timeout': 0.5, 'queue_max_attempts': 1})
    with running_worker(env, tmp_path, '-n', '1'):
        wait_for(lambda: task_states(env) == {'failed': 1},
            message='the slow statement to be cancelled')
    state, attempts, error = _tasks(env, [slow])[slow]
    assert attempts == 1
    assert 'statement timeout' in error or 'TaskTimeout' in error


def test_killed_worker_processes_lose_nothing(pg_env, tmp_path):
    env = pg_env
    worker_mode()
    count = 600
    with env.transaction(context={'queue_max_attempts': 50}):
        Log = Pool().get('test.log')
        for index in range(count):
            Log.__queue__.insert_slowly([], f'task {index}', 0.03)
    random_ = random.Random(4)
    kills = 0
    first = tmp_path / 'first'
    second = tmp_path / 'second'
    first.mkdir()
    second.mkdir()
    with running_worker(env, first, '-n', '2'), \
            running_worker(env, second, '-n', '2'):
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            time.sleep(random_.uniform(0.1, 0.3))
            pids = _worker_pids(env)
            if pids:
                try:
                    os.kill(random_.choice(pids), signal.SIGKILL)
                    kills += 1
                except ProcessLookupError:
                    pass
        wait_for(lambda: task_states(env) == {'done': count}, timeout=60,
            message='every task done')
    names = _log_names(env)
    assert kills >= 8
    assert len(names) == count
    assert sorted(names) == sorted(f'task {i}' for i in range(count))


def _terminate_backends(env):
    connection = psycopg2.connect(env.uri, dbname='postgres')
    connection.autocommit = True
    cursor = connection.cursor()
    cursor.execute(
        'SELECT pg_terminate_backend(pid) FROM pg_stat_activity '
        'WHERE datname = %s AND pid <> pg_backend_pid()',
        (env.database_name,))
    terminated = cursor.rowcount
    # pg_terminate_backend only signals: wait for the backends to exit.
    for _ in range(100):
        cursor.execute(
            'SELECT count(*) FROM pg_stat_activity WHERE datname = %s '
            'AND pid <> pg_backend_pid()', (env.database_name,))
        if cursor.fetchone()[0] == 0:
            break
        time.sleep(0.05)
    connection.close()
    return terminated


def test_workers_survive_terminated_connections(pg_env, tmp_path):
    env = pg_env
    worker_mode()
    _queue(env, 'insert', 5, 'before')
    with running_worker(env, tmp_path, '-n', '2') as process:
        wait_for(lambda: task_states(env) == {'done': 5},
            message='the first tasks')
        assert _terminate_backends(env) >= 3
        # The test's own pooled connections were cut too: the pool
        # replaces them.
        started = time.monotonic()
        _queue(env, 'insert', 5, 'after')
        wait_for(lambda: task_states(env) == {'done': 10}, timeout=20,
            message='the tasks queued after the cut')
        assert time.monotonic() - started < 15
        assert process.poll() is None
    assert sorted(_log_names(env)) == ['after'] * 5 + ['before'] * 5


def test_running_task_is_cancelled(pg_env, tmp_path):
    env = pg_env
    worker_mode()
    long, = _queue(env, 'sleep', 1, 30)
    other, = _queue(env, 'insert', 1, 'other')
    with running_worker(env, tmp_path, '-n', '1'):
        wait_for(lambda: _tasks(env, [long])[long][0] == 'running',
            message='the long task running')
        result = subprocess.run(
            command('trytond-queue') + [
                '-c', env.config_file(tmp_path), 'cancel', str(long),
                '-d', env.database_name],
            env=env.subprocess_env(), capture_output=True, text=True,
            timeout=60)
        assert result.returncode == 0, result.stderr
        assert 'asked to roll it back' in result.stdout
        wait_for(lambda: task_states(env) == {
            'cancelled': 1, 'done': 1}, timeout=20,
            message='the task cancelled and the other done')
    assert _log_names(env) == ['other']
