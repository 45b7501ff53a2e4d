"""A PostgreSQL restart in the middle of a drain, on a private server.

The test starts a cluster of its own (initdb, pg_ctl) so that it can
restart it without disturbing anyone; it needs the PostgreSQL server
binaries, found with pg_config.
"""
import os
import shutil
import socket
import subprocess
import tempfile
import uuid

import pytest

from trytond_queue import backend
from trytond_queue.config import config
from trytond_queue.pool import Pool

from .conftest import Environment
from .workers import running_worker, task_states, wait_for, worker_mode


def _server_binaries():
    try:
        bindir = subprocess.run(
            ['pg_config', '--bindir'], capture_output=True, text=True,
            check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    if not os.path.exists(os.path.join(bindir, 'initdb')):
        return None
    return bindir


def _as_postgres(argv):
    # The server refuses to run as root.
    if os.geteuid() == 0:
        return ['runuser', '-u', 'postgres', '--'] + argv
    return argv


def _free_port():
    with socket.socket() as probe:
        probe.bind(('127.0.0.1', 0))
        return probe.getsockname()[1]


@pytest.fixture
def private_server():
    """A PostgreSQL cluster of the test's own; yield (uri, restart)."""
    bindir = _server_binaries()
    if bindir is None:
        reason = 'the PostgreSQL server binaries (initdb) are missing'
        if os.environ.get('TRYTOND_QUEUE_REQUIRE_POSTGRESQL'):
            pytest.fail(reason)
        pytest.skip(reason)
    directory = tempfile.mkdtemp(prefix='trytond-queue-cluster-')
    if os.geteuid() == 0:
        shutil.chown(directory, 'postgres', 'postgres')
    data = os.path.join(directory, 'data')
    port = _free_port()
    pg_ctl = os.path.join(bindir, 'pg_ctl')
    options = (
        f'-p {port} -k {directory} -c listen_addresses=127.0.0.1 '
        '-c fsync=off')
    subprocess.run(_as_postgres([
        os.path.join(bindir, 'initdb'), '-D', data, '-A', 'trust',
        '-U', 'postgres']), check=True, capture_output=True)
    log = os.path.join(directory, 'server.log')

    def control(*args):
        subprocess.run(
            _as_postgres([pg_ctl, '-D', data, '-o', options, '-l', log,
                '-w', *args]), check=True, capture_output=True)

    control('start')
    try:
        yield f'postgresql://postgres@127.0.0.1:{port}/', (
            lambda: control('restart', '-m', 'fast'))
    finally:
        subprocess.run(
            _as_postgres([pg_ctl, '-D', data, 'stop', '-m', 'immediate']),
            capture_output=True)
        shutil.rmtree(directory, ignore_errors=True)


def test_workers_finish_the_drain_across_a_server_restart(
        private_server, tmp_path):
    uri, restart = private_server
    name = f'trytond_queue_restart_{uuid.uuid4().hex[:8]}'
    env = Environment('postgresql', uri, str(tmp_path), name)
    env.configure()
    backend.Database(name).create()
    try:
        Pool(name).init()
        worker_mode()
        count = 300
        with env.transaction():
            Log = Pool().get('test.log')
            for index in range(count):
                Log.__queue__.insert_slowly([], f'task {index}', 0.01)
        with running_worker(env, tmp_path, '-n', '2'):
            wait_for(lambda: task_states(env).get('done', 0) >= 30,
                message='the drain under way')
            restart()
            # The restart came in the middle of the drain.
            wait_for(lambda: 'lost its database connection' in (
                tmp_path / 'worker.log').read_text(),
                message='the workers to lose their connection')
            wait_for(lambda: task_states(env) == {'done': count},
                timeout=90, message='every task done after the restart')
        with env.transaction(readonly=True):
            names = [log.name for log in Pool().get('test.log').search([])]
        assert sorted(names) == sorted(f'task {i}' for i in range(count))
    finally:
        backend.forget_databases(name)
        config.reset()
