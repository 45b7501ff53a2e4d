"""Helpers to drive real ``trytond-worker`` processes from the tests."""
import contextlib
import os
import signal
import subprocess
import sys
import time

import pytest

from trytond_queue.config import config
from trytond_queue.pool import Pool

BIN = os.path.dirname(sys.executable)


def command(name):
    """Return the argv that runs an installed console script."""
    path = os.path.join(BIN, name)
    if os.path.exists(path):
        return [path]
    module = {'trytond-worker': 'worker', 'trytond-queue': 'queue'}[name]
    return [sys.executable, '-m', f'trytond_queue.commands.{module}']


@contextlib.contextmanager
def running_worker(env, tmp_path, *args, stop=True, **options):
    """Run trytond-worker on the test database during the block."""
    conf = env.config_file(tmp_path, **options)
    log_path = os.path.join(str(tmp_path), 'worker.log')
    with open(log_path, 'w') as log:
        process = subprocess.Popen(
            command('trytond-worker') + [
                '-c', conf, '-d', env.database_name, '-v', *args],
            env=env.subprocess_env(), stdout=log,
            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        yield process
    finally:
        _stop(process, stop)
        with open(log_path) as log:
            # Shown by pytest when the test fails.
            print(''.join(
                line for line in log
                if ' done in ' not in line)[-5000:])


def _stop(process, stop):
    if process.poll() is None:
        if stop:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                pass
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def wait_for(condition, timeout=30, interval=0.05, message='condition'):
    """Wait until condition() is true; fail the test after timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    pytest.fail(f'timed out after {timeout} s waiting for {message}')


def task_states(env):
    """Return {state: count} of the queue."""
    with env.transaction(readonly=True):
        Queue = Pool().get('ir.queue')
        counts = {}
        for task in Queue.search([]):
            counts[task.state] = counts.get(task.state, 0) + 1
    return counts


def worker_mode():
    """Queue without running at commit, as with a worker configured."""
    config.set('queue', 'worker', 'True')
