"""The life of tasks, step by random step, against a model of it.

Hypothesis queues, claims, runs, kills, rescues, gives back, promotes,
retries and cancels tasks in random order; after every step the rows of
``ir_queue`` and ``test_log`` must say what the model says.
"""
import datetime
import time

from hypothesis import Phase, settings, stateful
from hypothesis import strategies as st
from hypothesis.stateful import precondition, rule
from sql import Table

from trytond_queue.config import config
from trytond_queue.pool import Pool
from trytond_queue.queue import admin, identity, inline, store
from trytond_queue.queue.model import STATES, WAITING_STATES
from trytond_queue.queue.runner import run_batch

from .conftest import _empty_tables

# The explain phase traces every line run while it shrinks, which turns
# a failure found in a second into minutes of database calls.
SETTINGS = settings(
    max_examples=25, stateful_step_count=15, deadline=None,
    phases=[phase for phase in Phase if phase is not Phase.explain])
# When a task may start, from its enqueue: soon and in the future make it
# scheduled, and only the future is not due while the test runs.
DELAYS = {
    'now': None, 'past': datetime.timedelta(minutes=-1),
    'soon': datetime.timedelta(milliseconds=1),
    'future': datetime.timedelta(hours=1)}
# Whether each task fails, its max_attempts and its delay.
TASKS = st.lists(
    st.tuples(st.booleans(), st.integers(1, 3), st.sampled_from(list(DELAYS))),
    min_size=1, max_size=4)


class Task:
    """What the model knows of one task."""

    def __init__(self, number, fails, max_attempts, delay):
        self.name = f'task {number}'
        self.fails = fails
        self.max_attempts = max_attempts
        self.attempts = 0
        self.state = 'scheduled' if delay in ('soon', 'future') else 'pending'
        # Whether a scheduled task is due once the soon ones are.
        self.due = delay != 'future'
        self.worker = None

    def leave(self, state):
        """Leave the running state, or stay where it was; return state."""
        self.state, self.worker = state, None
        return state

    def claim(self, worker_id):
        """Start an attempt."""
        self.state, self.worker = 'running', worker_id
        self.attempts += 1

    def run(self):
        """Run the method; return the outcome as run_batch counts it."""
        return self.spend() if self.fails else self.leave('done')

    def spend(self):
        """End a failed attempt: retry, at once here, or fail for good."""
        if self.attempts >= self.max_attempts:
            return self.leave('failed')
        self.due = True
        return self.leave('scheduled')

    def rescue(self):
        """Its worker died: the attempt is spent, the task ready again."""
        return self.leave(
            'failed' if self.attempts >= self.max_attempts else 'pending')

    def release(self):
        """Its worker never started it: the attempt is refunded."""
        self.attempts -= 1
        return self.leave('pending')


class TaskMachine(stateful.RuleBasedStateMachine):
    """Tasks of test.log: insert succeeds, fail always fails."""

    env = None
    task_ids = stateful.Bundle('task_ids')

    def __init__(self):
        super().__init__()
        self.database_name = self.env.database_name
        self.model = {}
        # A live worker with the tasks it claimed and has not run yet.
        self.held = None
        self.dead = set()
        self.soon_until = 0

    def teardown(self):
        if self.held is not None:
            self.held[0].close()
        _empty_tables(self.env, Pool(self.database_name))

    def _count(self, state):
        return sum(t.state == state for t in self.model.values())

    def _claim(self, worker, size):
        pending = {i for i, t in self.model.items() if t.state == 'pending'}
        claimed = worker.claim(size)
        assert len(claimed) == min(size, len(pending))
        assert {t.id for t in claimed} <= pending
        for task in claimed:
            self.model[task.id].claim(worker.id)
        return claimed

    def _wait_for_soon(self):
        time.sleep(max(0, self.soon_until - time.time()))

    def _queue(self, specs):
        ids = []
        with self.env.transaction() as transaction:
            Log = Pool().get('test.log')
            for fails, max_attempts, delay in specs:
                task = Task(len(self.model) + len(ids), fails, max_attempts,
                    delay)
                method = getattr(Log.__queue__, 'fail' if fails else 'insert')
                with transaction.set_context(
                        queue_max_attempts=max_attempts,
                        queue_scheduled_at=DELAYS[delay]):
                    task_id, = method([], task.name)
                ids.append((task_id, task))
        if any(t.state == 'scheduled' and t.due for _, t in ids):
            # Their scheduled time was taken before the commit.
            self.soon_until = time.time() + 0.002
        self.model.update(ids)
        return stateful.multiple(*(task_id for task_id, _ in ids))

    @stateful.initialize(target=task_ids, specs=TASKS)
    def queue_first(self, specs):
        return self._queue(specs)

    @rule(target=task_ids, specs=TASKS)
    def queue(self, specs):
        return self._queue(specs)

    @precondition(lambda self: self._count('pending'))
    @rule(size=st.integers(1, 4))
    def claim_then_die(self, size):
        worker = identity.Identity(self.database_name).open()
        try:
            self._claim(worker, size)
        finally:
            # Its lock goes with its connection, as when its process dies.
            worker.close(forget=False)
        self.dead.add(worker.id)
        # The server drops the lock of a closed session a moment later.
        for _ in range(500):
            with self.env.transaction(readonly=True) as transaction:
                rows = admin.workers(
                    transaction.connection.cursor(), transaction.database)
            if not any(w['id'] == worker.id and w['alive'] for w in rows):
                break
            time.sleep(0.01)

    @precondition(lambda self: self.dead or self.held)
    @rule()
    def rescue(self):
        rescuer = identity.Identity(self.database_name).open()
        try:
            ids = identity.rescue_dead_workers(
                rescuer.connection, rescuer.database)
        finally:
            rescuer.close()
        assert sorted(ids) == self._rescue_orphans()

    def _rescue_orphans(self):
        orphans = sorted(i for i, t in self.model.items()
            if t.state == 'running' and t.worker in self.dead)
        for task_id in orphans:
            self.model[task_id].rescue()
        self.dead.clear()
        return orphans

    @precondition(lambda self: self.held is None and self._count('pending'))
    @rule(size=st.integers(1, 4))
    def claim_and_hold(self, size):
        worker = identity.Identity(self.database_name).open()
        self.held = (worker, [])
        self.held[1].extend(self._claim(worker, size))

    @precondition(lambda self: self.held is not None)
    @rule()
    def run_held(self):
        (worker, claimed), self.held = self.held, None
        try:
            counts = run_batch(self.database_name, worker.id, claimed)
        finally:
            worker.close()
        outcomes = [self.model[t.id].run() for t in claimed]
        assert counts == (outcomes.count('done'), outcomes.count('failed'))

    @precondition(lambda self: self.held is not None)
    @rule(blame_first=st.booleans())
    def give_back_held(self, blame_first):
        # As the manager does when it sees its worker die, blaming the
        # task it ran, if any.
        (worker, claimed), self.held = self.held, None
        culprit = claimed[0].id if blame_first else None
        try:
            identity.give_back(worker.connection, worker.database,
                worker.id, culprit, 'The worker was killed.')
        finally:
            worker.close()
        for task in claimed:
            if task.id == culprit:
                self.model[task.id].spend()
            else:
                self.model[task.id].release()

    @rule()
    def promote(self):
        self._wait_for_soon()
        with self.env.transaction() as transaction:
            count = store.promote(
                transaction.connection.cursor(), transaction.database)
        due = [t for t in self.model.values()
            if t.state == 'scheduled' and t.due]
        assert count == len(due)
        for task in due:
            task.state = 'pending'

    @rule(ids=st.lists(task_ids, min_size=1, max_size=3))
    def retry(self, ids):
        before, after = admin.run_change(
            self.database_name, admin.retry_tasks, ids)
        for task_id in set(ids):
            task = self.model[task_id]
            assert before[task_id] == task.state
            if task.state in admin.RETRYABLE_STATES:
                task.state, task.attempts = 'pending', 0
            assert after[task_id] == task.state

    @rule(ids=st.lists(task_ids, min_size=1, max_size=3))
    def cancel(self, ids):
        _, cancelled, _ = admin.run_change(
            self.database_name, admin.cancel_tasks, ids)
        waiting = {i for i in ids if self.model[i].state in WAITING_STATES}
        assert cancelled == waiting
        for task_id in waiting:
            self.model[task_id].state = 'cancelled'

    @rule()
    def run_due(self):
        self._wait_for_soon()
        counts = inline.run_due(self.database_name)
        # It gives back the tasks of dead workers first.
        self._rescue_orphans()
        outcomes = []
        while ready := [t for t in self.model.values()
                if t.state == 'pending' or t.state == 'scheduled' and t.due]:
            for task in ready:
                task.claim(None)
                outcomes.append(task.run())
        assert counts == (outcomes.count('done'), outcomes.count('failed'))

    @stateful.invariant()
    def database_agrees_with_the_model(self):
        queue = Table('ir_queue')
        with self.env.transaction(readonly=True) as transaction:
            cursor = transaction.connection.cursor()
            cursor.execute(*queue.select(
                queue.id, queue.state, queue.attempts, queue.max_attempts,
                queue.worker))
            rows = {id_: values for id_, *values in cursor}
            log = Pool().get('test.log').__table__()
            cursor.execute(*log.select(log.name))
            names = sorted(name for name, in cursor)
        # No task lost, none made up.
        assert sorted(rows) == sorted(self.model)
        holders = self.dead | ({self.held[0].id} if self.held else set())
        for task_id, (state, attempts, max_attempts, worker) in rows.items():
            task = self.model[task_id]
            assert state in STATES
            assert attempts <= max_attempts
            assert (state, attempts, worker) == (
                task.state, task.attempts, task.worker), task.name
            assert state != 'running' or worker in holders
        # A done task ran exactly once; no failed attempt left its row.
        assert names == sorted(
            t.name for t in self.model.values() if t.state == 'done')


def test_tasks_follow_the_model_of_their_states(env):
    config.set('queue', 'worker', 'True')
    # A retry is due at once, so that the model knows when it runs.
    config.set('queue', 'retry_delay', '0')
    machine = type('TaskMachine', (TaskMachine,), {'env': env})
    stateful.run_state_machine_as_test(machine, settings=SETTINGS)
