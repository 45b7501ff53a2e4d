"""The benchmark's environment: databases, configuration and workers.

Each backend gets a database of its own and a configuration file in the
benchmark's temporary folder; the worker is the installed
``trytond-worker``, run as a real subprocess, so that its start-up,
its processes and its connections are those of production.
"""
import datetime
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time

import psycopg2
from sql import Flavor, Table
from sql.aggregate import Count, Max, Min

from trytond_queue import backend as backends
from trytond_queue.config import config
from trytond_queue.pool import Pool

from cpu import CpuMeter

__all__ = [
    'BenchError', 'Backend', 'Worker', 'worker_command', 'wait_drained',
    'cpu_per_task', 'drain_stats', 'BENCH_DIR', 'MODULE',
    ]

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
# The module of bench_models.py, imported by the workers from BENCH_DIR.
MODULE = 'bench_models'
# Seconds after which the stop of an idle worker is reported as slow.
SLOW_STOP = 5
# States of a task that is not finished.
OPEN_STATES = ['pending', 'running', 'scheduled']


class BenchError(Exception):
    """A figure could not be measured; the message says why."""


class Backend:
    """A database of the benchmark and the configuration that reaches it."""

    def __init__(self, kind, name, directory, uri=None):
        self.kind = kind
        self.name = name
        self.directory = directory
        self.uri = uri if kind == 'postgresql' else 'sqlite://'
        self.config_path = os.path.join(directory, f'{kind}-{name}.conf')
        self.flavor = Flavor(paramstyle='qmark') if (
            kind == 'sqlite') else Flavor()
        self.path = os.path.join(directory, f'{name}.sqlite')
        self.created = False

    @property
    def is_postgresql(self):
        """Tell whether this is the PostgreSQL database."""
        return self.kind == 'postgresql'

    def write_config(self):
        """Write the configuration file that the workers read."""
        sections = {
            'database': {'uri': self.uri, 'path': self.directory},
            'pool': {'modules': MODULE},
            'queue': {'worker': 'True'},
            }
        with open(self.config_path, 'w') as fp:
            for section, options in sections.items():
                fp.write(f'[{section}]\n')
                for option, value in options.items():
                    fp.write(f'{option} = {value}\n')
                fp.write('\n')

    def activate(self):
        """Point the configuration of this process at this database."""
        config.reset()
        config.update_etc(self.config_path)

    def create(self):
        """Create the database and its tables, replacing an old one."""
        self.write_config()
        self.activate()
        database = backends.Database(self.name)
        if database.exists():
            database.drop()
        if self.is_postgresql:
            database.create()
        self.created = True
        Pool.forget(self.name)
        Pool(self.name).init()

    def drop(self):
        """Drop the database and forget its pool."""
        if not self.created:
            return
        self.activate()
        Pool.forget(self.name)
        database = backends.Database(self.name)
        backends.forget_databases(self.name)
        database.drop()
        self.created = False

    def connect(self, autocommit=True):
        """Return a DB-API connection of its own, outside the framework."""
        if self.is_postgresql:
            connection = psycopg2.connect(self.uri, dbname=self.name)
            connection.autocommit = autocommit
            return connection
        return sqlite3.connect(
            self.path, isolation_level=None if autocommit else 'DEFERRED',
            timeout=60)

    def execute(self, cursor, query):
        """Run a python-sql query in this backend's flavor."""
        previous = Flavor.get()
        Flavor.set(self.flavor)
        try:
            text, params = tuple(query)
        finally:
            Flavor.set(previous)
        cursor.execute(text, params)
        return cursor

    def render(self, query):
        """Return (text, params) of a python-sql query in this flavor."""
        previous = Flavor.get()
        Flavor.set(self.flavor)
        try:
            return tuple(query)
        finally:
            Flavor.set(previous)


def worker_command():
    """Return the trytond-worker installed beside this Python."""
    path = os.path.join(os.path.dirname(sys.executable), 'trytond-worker')
    if os.path.exists(path):
        return path
    found = shutil.which('trytond-worker')
    if found is None:
        raise BenchError(
            'trytond-worker is not installed: run "pip install -e ." in '
            'the project, or give --worker-command.')
    return found


class Worker:
    """A ``trytond-worker`` subprocess, stopped when the block ends."""

    def __init__(self, backend, processes, command=None, profile=None,
                 rate=100, idle=True):
        self.backend = backend
        self.processes = processes
        self.command = command or worker_command()
        self.profile = profile
        self.rate = rate
        self.idle = idle
        self.log_path = os.path.join(
            backend.directory, f'worker-{backend.name}.log')
        self.pid_path = os.path.join(
            backend.directory, f'worker-{backend.name}.pid')
        self.process = None

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc_info):
        self.stop()

    def start(self):
        """Start the worker on the backend's database."""
        command = [
            self.command, '-c', self.backend.config_path,
            '-d', self.backend.name, '-n', str(self.processes),
            '--pidfile', self.pid_path]
        if self.profile:
            # Idle samples are kept unless told otherwise: time spent
            # waiting for the server is where a worker's wall time goes.
            command = [
                py_spy_command(), 'record', '--subprocesses',
                '--rate', str(self.rate), '--format', 'raw',
                '--output', self.profile,
                *(['--idle'] if self.idle else []), '--'] + command
        env = dict(os.environ)
        env['PYTHONPATH'] = os.pathsep.join(
            filter(None, [BENCH_DIR, env.get('PYTHONPATH')]))
        for name in ('TRYTOND_CONFIG', 'TRYTOND_DATABASE_NAMES'):
            env.pop(name, None)
        with open(self.log_path, 'ab') as log:
            self.process = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, env=env, start_new_session=True)

    def check(self):
        """Raise BenchError if the worker has exited."""
        code = self.process.poll()
        if code is not None:
            raise BenchError(
                f'trytond-worker exited with code {code}; its output '
                f'ends with:\n{self.log_tail()}')

    def log_tail(self, lines=15):
        """Return the last lines of the worker's output."""
        try:
            with open(self.log_path, errors='replace') as fp:
                return ''.join(fp.readlines()[-lines:])
        except FileNotFoundError:
            return ''

    def stop(self, timeout=30):
        """Stop the worker as an operator would: SIGTERM, then SIGKILL."""
        process, self.process = self.process, None
        if process is None:
            return
        if process.poll() is None:
            start = time.monotonic()
            os.kill(self._manager_pid(process), signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                # The session was made for this worker: the group holds
                # its manager and children, nothing else.
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
            seconds = time.monotonic() - start
            if seconds > SLOW_STOP:
                # Not a figure, but worth knowing: an idle worker should
                # stop at once.
                print(
                    f'  warning: trytond-worker took {seconds:.1f} s to '
                    f'stop; its output ends with:\n{self.log_tail()}',
                    file=sys.stderr)
        try:
            os.remove(self.pid_path)
        except FileNotFoundError:
            pass

    def _manager_pid(self, process):
        if not self.profile:
            return process.pid
        # Under py-spy the manager is its child; its pid file says which.
        try:
            with open(self.pid_path) as fp:
                return int(fp.read().strip())
        except (FileNotFoundError, ValueError):
            return process.pid


def py_spy_command():
    """Return py-spy installed beside this Python."""
    path = os.path.join(os.path.dirname(sys.executable), 'py-spy')
    if os.path.exists(path):
        return path
    found = shutil.which('py-spy')
    if found is None:
        raise BenchError(
            'py-spy is not installed: run "pip install py-spy" to '
            'profile the workers.')
    return found


def open_tasks(backend, cursor):
    """Return the number of tasks not finished."""
    queue = Table('ir_queue')
    backend.execute(cursor, queue.select(
        Count(queue.id), where=queue.state.in_(OPEN_STATES)))
    return cursor.fetchone()[0]


def wait_drained(backend, worker, stall_timeout=60, interval=0.05):
    """Wait until no task is left open; fail if the worker stalls.

    Return the samples taken meanwhile: (tasks left, CPU seconds of the
    worker, CPU seconds of the server), the CPU times being None where
    they cannot be read.
    """
    connection = backend.connect()
    try:
        cursor = connection.cursor()
        meter = CpuMeter(
            backend, cursor, worker.process.pid,
            include_root=not worker.profile)
        samples = []
        last, changed = None, time.monotonic()
        while True:
            left = open_tasks(backend, cursor)
            samples.append((left, meter.sample()))
            if not left:
                return samples
            worker.check()
            if left != last:
                last, changed = left, time.monotonic()
            elif time.monotonic() - changed > stall_timeout:
                raise BenchError(
                    f'The worker finished no task for {stall_timeout} s '
                    f'with {left} left; its output ends with:\n'
                    f'{worker.log_tail()}')
            time.sleep(interval)
    finally:
        connection.close()


def cpu_per_task(samples, tasks):
    """Return the CPU seconds per task of the worker and of the server.

    The count starts at the last sample before the first claim, so that
    the start-up of the processes is left out, within one interval.
    """
    before = [cpu for left, cpu in samples if left >= tasks]
    start = before[-1] if before else samples[0][1]
    end = samples[-1][1]
    if start is None or end is None:
        return None
    return tuple((e - s) / tasks for s, e in zip(start, end))


def _to_datetime(value):
    if isinstance(value, str):
        return datetime.datetime.fromisoformat(value)
    return value


def drain_stats(backend, after=None):
    """Return (done, failed, an error, seconds of the drain) of ir_queue.

    The drain lasts from the first claim to the last finish, and counts
    only the rows after the id after, when it is given.
    """
    queue = Table('ir_queue')
    where = queue.id > after if after is not None else None
    connection = backend.connect()
    try:
        cursor = connection.cursor()
        backend.execute(cursor, queue.select(
            queue.state, Count(queue.id), Min(queue.dequeued_at),
            Max(queue.finished_at), Min(queue.error), where=where,
            group_by=[queue.state]))
        rows = {state: rest for state, *rest in cursor}
    finally:
        connection.close()
    done = rows.get('done', (0, None, None, None))
    failed = rows.get('failed', (0, None, None, None))
    seconds = None
    if done[0]:
        seconds = (_to_datetime(done[2])
            - _to_datetime(done[1])).total_seconds()
    return done[0], failed[0], failed[3], seconds
