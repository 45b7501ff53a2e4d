"""The manager: starts worker processes, replaces them, stops them.

The manager runs no task.  It keeps its processes' number, replaces one
that dies or was recycled, and, because it knows from shared memory the
task each process runs, it gives back at once the tasks of a process
that died: the task that was running keeps the attempt it spent, the
others get theirs back.  It also stops a task that overruns its timeout
and cannot be interrupted, and gives back the tasks of dead workers of
other managers.
"""
import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import sys
import time

from ..pool import Pool
from ..queue.identity import (
    Identity,
    give_back,
    mark_seen,
    rescue_dead_workers,
)
from ..queue.notify import CANCEL_CHANNEL, listen
from .process import (
    CANCEL,
    CONNECTION_LOST,
    STOP,
    STOP_AT_ONCE,
    Slot,
    drain_pipe,
    serve,
)

__all__ = ['Manager']

logger = logging.getLogger(__name__)

# How often the manager looks for dead workers of other managers.
RESCUE_INTERVAL = 1.0
# How long past its timeout a task may run before its process is killed:
# the process's own alarm should have stopped it long before.
TIMEOUT_GRACE = 5.0
# A process that dies sooner than this after its start is restarted
# after a growing pause, so that a broken database is not hammered.
QUICK_DEATH = 2.0
MAX_RESTART_DELAY = 30.0


def _child(*args):
    sys.exit(serve(*args))


class Child:
    """A worker process and the shared memory that shows what it runs."""

    def __init__(self, process, slot):
        self.process = process
        self.slot = slot
        self.started = time.monotonic()
        self.killed_for = None


class Manager:
    """Supervise worker processes serving the databases."""

    def __init__(self, config_file, database_names, processes=1,
                 queues=(), max_tasks=None, poll_interval=5.0,
                 grace_period=30.0, log_options=None):
        self.config_file = config_file
        self.database_names = list(database_names)
        self.processes = max(int(processes), 1)
        self.queues = tuple(queues)
        self.max_tasks = max_tasks
        self.poll_interval = poll_interval
        self.grace_period = grace_period
        self.log_options = log_options or {}
        self.context = multiprocessing.get_context('spawn')
        self.children = {}
        self.identities = []
        self.signals = 0
        self.restart_delay = 0.0
        self.restart_at = 0.0
        # (database index, worker id) of dead processes whose tasks
        # could not be given back yet.
        self.orphans = []
        # The signals acted on, when the grace period ends, when to look
        # for dead workers next, and whether the manager is done.
        self._handled = 0
        self._deadline = None
        self._next_rescue = 0.0
        self._stopped = False

    def on_signal(self, signum, frame):
        """Count the stop signals; the loop acts on them."""
        self.signals += 1

    def run(self) -> int:
        """Serve until stopped; return the exit code."""
        read_fd, write_fd = os.pipe()
        os.set_blocking(read_fd, False)
        os.set_blocking(write_fd, False)
        signal.set_wakeup_fd(write_fd)
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self.on_signal)
        for name in self.database_names:
            Pool(name).init(update=False)
        self.identities = [
            self._open_identity(name) for name in self.database_names]
        for identity in self.identities:
            # The manager runs no transaction from now on: its pooled
            # connections would only sit idle on the server.
            identity.database.close()
        logger.info(
            'manager %d: %d process(es) for %s', os.getpid(),
            self.processes, ', '.join(self.database_names))
        try:
            return self._loop(read_fd)
        finally:
            for identity in self.identities:
                identity.close()
            signal.set_wakeup_fd(-1)
            os.close(read_fd)
            os.close(write_fd)

    def _loop(self, wakeup_fd):
        while not self._stopped:
            try:
                self._step(wakeup_fd)
            except Exception:
                # A bug must not leave the processes without their
                # manager: say it loudly and go on.
                logger.critical(
                    'manager %d: unexpected error', os.getpid(),
                    exc_info=True)
                time.sleep(RESCUE_INTERVAL)
        return 0

    def _step(self, wakeup_fd):
        """Do one turn of supervision, waiting at most half a second."""
        signals = self.signals
        if signals > self._handled:
            self._stop_children(at_once=signals > 1)
            self._handled = signals
            if self._deadline is None:
                self._deadline = time.monotonic() + self.grace_period
                logger.info(
                    'manager %d: stopping, running tasks have %g s',
                    os.getpid(), self.grace_period)
        if self._deadline is None:
            self._fill()
        elif not self.children:
            logger.info('manager %d: stopped', os.getpid())
            self._stopped = True
            return
        elif time.monotonic() > self._deadline:
            logger.warning(
                'manager %d: grace period over, killing %d process(es)',
                os.getpid(), len(self.children))
            for child in self.children.values():
                child.killed_for = 'the worker was stopped'
                child.process.kill()
        now = time.monotonic()
        if now >= self._next_rescue:
            self._rescue()
            self._next_rescue = now + RESCUE_INTERVAL
        self._check_timeouts()
        listening = [
            i.connection for i in self.identities
            if i.database.has_channel and i.connection is not None
            and not i.connection.closed]
        ready = multiprocessing.connection.wait(
            list(self.children) + [wakeup_fd] + listening,
            timeout=RESCUE_INTERVAL / 2)
        drain_pipe(wakeup_fd)
        self._cancel_requested([c for c in listening if c in ready])
        self._reap()

    def _open_identity(self, database_name):
        identity = Identity(database_name, self.queues).open()
        if identity.database.has_channel:
            listen(identity.connection, CANCEL_CHANNEL)
        return identity

    def _cancel_requested(self, connections):
        """Signal the processes running tasks that were cancelled."""
        for index, identity in enumerate(self.identities):
            if identity.connection not in connections:
                continue
            try:
                identity.connection.poll()
            except Exception:
                logger.debug('poll failed', exc_info=True)
            if not identity.connection.notifies and not (
                    identity.database.is_alive(identity.connection)):
                # Readable with nothing to read: the server ended the
                # session.  The next call opens a new one.
                logger.warning(
                    'manager %d: connection to %s lost', os.getpid(),
                    identity.database_name)
                identity.close(forget=False)
                continue
            requests = {
                n.payload for n in identity.connection.notifies
                if n.channel == CANCEL_CHANNEL}
            identity.connection.notifies.clear()
            for child in self.children.values():
                current = child.slot.current()
                if current and current[0] == index and (
                        str(current[1]) in requests):
                    child.slot.request_cancel(current[1])
                    logger.info(
                        'manager %d: cancelling task %s of process %d',
                        os.getpid(), current[1], child.process.pid)
                    os.kill(child.process.pid, CANCEL)

    def _fill(self):
        now = time.monotonic()
        if now < self.restart_at:
            return
        while len(self.children) < self.processes:
            self._start()

    def _start(self):
        slot_array = self.context.RawArray(
            'd', Slot.WORKERS + len(self.database_names))
        process = self.context.Process(
            target=_child, name='trytond-worker',
            args=(self.config_file, self.database_names, self.queues,
                self.max_tasks, slot_array,
                [i.id for i in self.identities], self.poll_interval,
                self.log_options))
        process.start()
        self.children[process.sentinel] = Child(process, Slot(slot_array))
        logger.info('manager %d: process %d started', os.getpid(),
            process.pid)

    def _stop_children(self, at_once):
        # Two signals sent at once may arrive as one: stopping at once
        # has a signal of its own.
        signum = STOP_AT_ONCE if at_once else STOP
        for child in self.children.values():
            if child.process.is_alive():
                os.kill(child.process.pid, signum)

    def _reap(self):
        for sentinel, child in list(self.children.items()):
            if child.process.is_alive():
                continue
            child.process.join()
            del self.children[sentinel]
            self._after_exit(child)

    def _after_exit(self, child):
        code = child.process.exitcode
        pid = child.process.pid
        current = child.slot.current()
        crashed = code not in (0, CONNECTION_LOST) and (
            child.killed_for != 'the worker was stopped')
        if code == 0:
            logger.info('manager %d: process %d exited', os.getpid(), pid)
        else:
            logger.warning(
                'manager %d: process %d %s', os.getpid(), pid,
                _describe(code))
        for index in range(len(self.identities)):
            worker_id = child.slot.worker(index)
            if worker_id is None:
                continue
            culprit = None
            if crashed and current and current[0] == index:
                culprit = current[1]
            error = (
                f'The worker process {pid} {_describe(code)} while '
                f'running the task'
                + (f' ({child.killed_for})' if child.killed_for else '')
                + '.')
            if not self._on_database(
                    index, give_back, worker_id, culprit, error):
                # Given back later by whichever manager finds them.
                self.orphans.append((index, worker_id))
        if code != 0 and time.monotonic() - child.started < QUICK_DEATH:
            self.restart_delay = min(
                max(self.restart_delay * 2, 0.5), MAX_RESTART_DELAY)
            self.restart_at = time.monotonic() + self.restart_delay
            logger.warning(
                'manager %d: processes die at start, next in %.1f s',
                os.getpid(), self.restart_delay)
        elif code == 0 or crashed:
            self.restart_delay = 0.0

    def _check_timeouts(self):
        now = time.monotonic()
        for child in self.children.values():
            current = child.slot.current()
            if not current or not current[3]:
                continue
            _, task_id, started, timeout = current
            if now - started > timeout + TIMEOUT_GRACE and (
                    child.killed_for is None):
                child.killed_for = (
                    f'task {task_id} ran past its timeout of {timeout:g} s')
                logger.warning(
                    'manager %d: killing process %d: %s', os.getpid(),
                    child.process.pid, child.killed_for)
                child.process.kill()

    def _rescue(self):
        for index in range(len(self.identities)):
            for orphan in [o for o in self.orphans if o[0] == index]:
                if self._on_database(index, give_back, orphan[1]):
                    self.orphans.remove(orphan)
            self._on_database(index, rescue_dead_workers)
            self._on_database(index, self._mark_seen, index)

    def _mark_seen(self, connection, database, index):
        mark_seen(connection, database, self.identities[index].id)

    def _on_database(self, index, function, *args):
        """Call function(connection, database, *args); tell if it worked.

        A lost connection is reopened, under a new identity, at the next
        call; it is logged once, not at every attempt.
        """
        identity = self.identities[index]
        try:
            if identity.connection is None:
                identity = self.identities[index] = self._open_identity(
                    identity.database_name)
                logger.warning(
                    'manager %d: connected to %s again', os.getpid(),
                    identity.database_name)
            function(identity.connection, identity.database, *args)
        except Exception as exception:
            if not identity.database.is_connection_error(exception):
                logger.critical(
                    'manager %d: %s on %s failed', os.getpid(),
                    function.__name__, identity.database_name,
                    exc_info=True)
                return False
            if identity.connection is not None:
                logger.warning(
                    'manager %d: connection to %s lost: %s', os.getpid(),
                    identity.database_name, str(exception).strip())
                identity.close(forget=False)
            return False
        return True


def _describe(code):
    if code is None:
        return 'is running'
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = str(-code)
        return f'was killed by {name}'
    if code == CONNECTION_LOST:
        return 'lost its database connection'
    return f'exited with code {code}'
