"""Per-queue limits held across every worker process."""
import pytest

from trytond_queue.config import config
from trytond_queue.exceptions import ConfigError
from trytond_queue.pool import Pool
from trytond_queue.queue.limits import configured_limits

from .workers import running_worker, task_states, wait_for, worker_mode


def test_limits_are_read_from_the_configuration(env):
    config.set('queue', 'limits', 'mail:2, export:1')
    assert configured_limits() == {'mail': 2, 'export': 1}


@pytest.mark.parametrize('value', ['mail', 'mail:0', 'mail:x', 'a b:1'])
def test_bad_limits_are_refused(env, value):
    config.set('queue', 'limits', value)
    with pytest.raises(ConfigError, match='QUEUE:LIMIT'):
        configured_limits()


def _max_overlap(intervals):
    events = sorted(
        [(start, 1) for start, _ in intervals]
        + [(end, -1) for _, end in intervals])
    running = most = 0
    for _, step in events:
        running += step
        most = max(most, running)
    return most


def test_limited_queue_never_runs_more_than_its_limit(pg_env, tmp_path):
    env = pg_env
    worker_mode()
    count, seconds = 12, 0.3
    with env.transaction(context={'queue_name': 'mail'}):
        Log = Pool().get('test.log')
        for _ in range(count):
            Log.__queue__.sleep([], seconds, name='mail')
    with env.transaction():
        for _ in range(6):
            Pool().get('test.log').__queue__.sleep([], 0.1, name='free')
    managers = []
    for index in range(3):
        directory = tmp_path / str(index)
        directory.mkdir()
        managers.append(running_worker(
            env, directory, '-n', '2', queue__limits='mail:2'))
    for manager in managers:
        manager.__enter__()
    try:
        wait_for(lambda: task_states(env) == {'done': count + 6},
            timeout=60, message='every task done')
    finally:
        for manager in reversed(managers):
            manager.__exit__(None, None, None)
    with env.transaction(readonly=True):
        logs = Pool().get('test.log').search([('name', '=', 'mail')])
        intervals = [(log.started, log.ended) for log in logs]
    assert len(intervals) == count
    assert _max_overlap(intervals) == 2
    span = max(e for _, e in intervals) - min(s for s, _ in intervals)
    # Two at a time the whole way: far less than one at a time.
    assert span < count * seconds / 2 + 1.0
