"""A worker process: claims batches of tasks and runs them.

It serves every database of the manager in turn, so that a busy
database does not starve the others, and sleeps on LISTEN (PostgreSQL)
or a short poll (SQLite) until a task is queued or a scheduled task is
due.  The manager learns through shared memory which task it runs, to
stop it on timeout and to know the culprit if the process dies.
"""
import logging
import os
import select
import signal
import time

from sql import Flavor

from ..config import config
from ..exceptions import TaskCancelled, TasksTakenOver
from ..pool import Pool
from ..queue import store
from ..queue.identity import Identity, rescue_dead_workers
from ..queue.limits import configured_limits, free_slot, take_slot
from ..queue.notify import listen
from ..queue.runner import StopRequested, run_batch
from . import logs

__all__ = ['serve', 'Slot', 'drain_pipe']

logger = logging.getLogger(__name__)

# Tasks claimed at once are bounded by this many seconds of expected
# work, so that slow tasks are not held back from idle processes.
BATCH_SECONDS = 0.05
# The exit code of a process that lost its connection: not a crash, the
# tasks it held are not to blame.
CONNECTION_LOST = 75
# The signals by which the manager stops a process after its task, stops
# it at once, and cancels its task.  A process ignores SIGTERM and
# SIGINT: sent to the whole group (by a terminal, or by systemd), they
# are for the manager alone, which then decides.
STOP = signal.SIGUSR1
STOP_AT_ONCE = signal.SIGQUIT
CANCEL = signal.SIGUSR2
# SQLite has no notifications: an idle process polls this often.
SQLITE_POLL = 0.05


class Slot:
    """The shared memory through which the manager watches a process.

    Fields: database index, task id, start (monotonic), timeout, the
    task to cancel, then the worker id of each database.
    """

    DATABASE, TASK, STARTED, TIMEOUT, CANCEL, WORKERS = range(6)

    def __init__(self, array):
        self.array = array

    def set_worker(self, index, worker_id):
        """Publish the worker id of the process for a database."""
        self.array[self.WORKERS + index] = worker_id

    def worker(self, index):
        """Return the worker id of the process for a database."""
        return int(self.array[self.WORKERS + index]) or None

    def start(self, index, task):
        """Publish the task about to run."""
        self.array[self.DATABASE] = index
        self.array[self.STARTED] = time.monotonic()
        self.array[self.TIMEOUT] = task.timeout or 0
        self.array[self.TASK] = task.id

    def finish(self):
        """Publish that no task runs."""
        self.array[self.TASK] = 0

    def request_cancel(self, task_id):
        """Ask the process to cancel the task if it still runs it."""
        self.array[self.CANCEL] = task_id

    def cancel_requested(self):
        """Tell whether the running task is the one to cancel."""
        task = int(self.array[self.TASK])
        return bool(task) and task == int(self.array[self.CANCEL])

    def current(self):
        """Return (database index, task id, started, timeout) or None."""
        task = int(self.array[self.TASK])
        if not task:
            return None
        return (int(self.array[self.DATABASE]), task,
            self.array[self.STARTED], self.array[self.TIMEOUT])


class _Monitor:
    """Tell the manager which task runs; stop between tasks if asked."""

    def __init__(self, slot, index, process):
        self.slot = slot
        self.index = index
        self.process = process

    @property
    def stopping(self):
        return self.process.stopping

    def started(self, task):
        self.slot.start(self.index, task)

    def finished(self, task):
        self.slot.finish()
        self.process.durations.append(
            time.monotonic() - self.slot.array[Slot.STARTED])


class WorkerProcess:
    """The loop of one worker process."""

    def __init__(self, database_names, queues, max_tasks, slot,
                 manager_ids, poll_interval):
        self.database_names = database_names
        self.queues = tuple(queues)
        self.max_tasks = max_tasks
        self.slot = slot
        self.manager_ids = manager_ids
        self.poll_interval = poll_interval
        self.claim_size = config.getint(
            'queue', 'claim_size', fallback=50) or 1
        self.limits = {
            name: limit for name, limit in configured_limits().items()
            if not queues or name in queues}
        self.stopping = False
        self.signals = 0
        self.durations = []
        self.identities = []
        self.ran = 0
        # The databases whose schedule to read again once idle.
        self.look_again = set()

    def on_signal(self, signum, frame):
        """First signal: stop after the task; second: stop at once."""
        self.signals += 1
        self.stopping = True
        if self.signals > 1 or signum == STOP_AT_ONCE:
            raise StopRequested()

    def on_cancel(self, signum, frame):
        """Stop the running task if it is the one to cancel."""
        if self.slot.cancel_requested():
            raise TaskCancelled(
                'The task was cancelled while it was running.')

    def open(self):
        """Register a worker identity per database and listen."""
        for index, name in enumerate(self.database_names):
            Pool(name).init(update=False)
            identity = Identity(
                name, self.queues, self.manager_ids[index]).open()
            if identity.database.has_channel:
                listen(identity.connection)
            self.identities.append(identity)
            self.slot.set_worker(index, identity.id)

    def close(self):
        """Drop the identities; the manager gives back what they held."""
        for identity in self.identities:
            identity.close(forget=False)

    def batch_size(self):
        """Claim as many tasks as fit in BATCH_SECONDS of recent work."""
        if not self.durations:
            return 1
        recent = self.durations[-50:]
        del self.durations[:-50]
        average = max(sum(recent) / len(recent), 1e-5)
        size = int(BATCH_SECONDS / average) or 1
        if self.max_tasks:
            size = min(size, self.max_tasks - self.ran)
        return max(1, min(size, self.claim_size))

    def serve(self):
        """Run tasks until asked to stop or max_tasks are done."""
        # When each database's next scheduled task is due; None: none is.
        next_due = dict.fromkeys(range(len(self.identities)), store.utcnow())
        while not self.stopping:
            worked = False
            for index, identity in enumerate(self.identities):
                if self.stopping:
                    break
                worked |= self._serve_once(index, identity, next_due)
                if self.max_tasks and self.ran >= self.max_tasks:
                    logger.info('worker %d: %d tasks done, recycled',
                        os.getpid(), self.ran)
                    return
            if not worked and not self.stopping:
                self._wait(next_due)
                # A notification may announce a scheduled task, and a
                # poll is the time to look again anyway: once the queue
                # is found empty, not before, to start a task sooner.
                self.look_again.update(next_due)

    def _serve_once(self, index, identity, next_due):
        """Claim and run one batch of a database; tell if any ran."""
        due = next_due[index]
        if due is not None and due <= store.utcnow():
            next_due[index] = self._promote(identity)
        worked = False
        for queue_name, limit in self.limits.items():
            if self.stopping:
                return worked
            worked |= self._serve_limited(
                index, identity, next_due, queue_name, limit)
        size = self.batch_size()
        tasks = identity.claim(size, excluded=tuple(self.limits))
        logger.debug('%s: claimed %d of %d', identity.database_name,
            len(tasks), size)
        if not tasks:
            if index in self.look_again:
                self.look_again.discard(index)
                next_due[index] = self._promote(identity)
            return worked
        self._run(index, identity, tasks, next_due)
        return True

    def _serve_limited(self, index, identity, next_due, queue_name, limit):
        """Run one task of a limited queue if one of its slots is free."""
        slot = take_slot(
            identity.connection, identity.database, queue_name, limit)
        if slot is None:
            return False
        try:
            tasks = identity.claim(1, queues=(queue_name,))
            if tasks:
                self._run(index, identity, tasks, next_due)
        finally:
            free_slot(identity.connection, identity.database, slot)
        return bool(tasks)

    def _run(self, index, identity, tasks, next_due):
        try:
            done, _ = run_batch(identity.database_name, identity.id, tasks,
                _Monitor(self.slot, index, self))
        except StopRequested:
            self._give_back(identity, tasks)
            raise
        except TasksTakenOver as exception:
            logger.warning('%s: %s', identity.database_name, exception)
            self._give_back(identity, tasks)
            return
        except Exception as exception:
            if not identity.database.is_connection_error(exception):
                logger.critical(
                    '%s: a batch of %d tasks failed', identity.database_name,
                    len(tasks), exc_info=True)
            self._give_back(identity, tasks)
            raise
        if done < len(tasks):
            # Failed attempts were scheduled for later.
            next_due[index] = store.utcnow()
        self.ran += len(tasks)

    def _promote(self, identity):
        """Make due scheduled tasks pending; return the next due time."""
        Flavor.set(identity.database.flavor)
        cursor = identity.connection.cursor()
        store.promote(cursor, identity.database)
        return store.next_scheduled_at(cursor)

    def _give_back(self, identity, tasks):
        try:
            cursor = identity.connection.cursor()
            store.release(cursor, [t.id for t in tasks], identity.id)
        except Exception:
            logger.debug('tasks not given back', exc_info=True)

    def _wait(self, next_due):
        timeout = self.poll_interval
        now = store.utcnow()
        for due in next_due.values():
            if due is not None:
                timeout = min(timeout, max(
                    (due - now).total_seconds(), 0))
        listening = [i.connection for i in self.identities
            if i.database.has_channel]
        if len(listening) < len(self.identities):
            timeout = min(timeout, SQLITE_POLL)
        # A signal writes to the wake-up pipe, so that a stop request
        # does not wait for the end of the timeout.
        readable, _, _ = select.select(
            listening + [self.wakeup_fd], [], [], timeout)
        for ready in readable:
            if ready == self.wakeup_fd:
                drain_pipe(self.wakeup_fd)
            else:
                ready.poll()
                ready.notifies.clear()


def serve(config_file, database_names, queues, max_tasks, slot_array,
          manager_ids, poll_interval, log_options):
    """The entry point of a worker process started by the manager."""
    logs.setup(**log_options)
    config.update_etc(config_file)
    process = WorkerProcess(
        database_names, queues, max_tasks, Slot(slot_array), manager_ids,
        poll_interval)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(STOP, process.on_signal)
    signal.signal(STOP_AT_ONCE, process.on_signal)
    signal.signal(CANCEL, process.on_cancel)
    process.wakeup_fd, write_fd = os.pipe()
    os.set_blocking(process.wakeup_fd, False)
    os.set_blocking(write_fd, False)
    signal.set_wakeup_fd(write_fd)
    try:
        process.open()
        for identity in process.identities:
            rescue_dead_workers(identity.connection, identity.database)
        process.serve()
    except StopRequested:
        logger.info('worker %d: stopped at once', os.getpid())
    except Exception as exception:
        if not any(i.database.is_connection_error(exception)
                for i in process.identities):
            raise
        logger.warning(
            'worker %d: connection lost (%s), the manager restarts it',
            os.getpid(), str(exception).strip())
        return CONNECTION_LOST
    finally:
        process.close()
    return 0


def drain_pipe(fd):
    """Read everything waiting in a non-blocking pipe."""
    try:
        while os.read(fd, 512):
            pass
    except BlockingIOError:
        pass
