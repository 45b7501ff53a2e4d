"""The ``ir.queue`` model: one row per queued call."""
from sql import Column, Table

from ..model import ModelSQL, fields

__all__ = ['Queue', 'Worker', 'STATES', 'WAITING_STATES', 'FINAL_STATES']

STATES = ('pending', 'scheduled', 'running', 'done', 'failed', 'cancelled')
# A scheduled task waits for its time, a pending one for a worker.
WAITING_STATES = ('pending', 'scheduled')
FINAL_STATES = ('done', 'failed', 'cancelled')


def _state_is(*states):
    column = Column(Table('ir_queue'), 'state')
    if len(states) == 1:
        return column == states[0]
    return column.in_(list(states))


class Queue(ModelSQL):
    """A call of a model's method, queued to run in its own transaction."""

    __name__ = 'ir.queue'

    name = fields.Char('Queue', required=True)
    model = fields.Char('Model', required=True)
    method = fields.Char('Method', required=True)
    data = fields.Dict('Call')
    state = fields.Char('State', required=True)
    priority = fields.Integer('Priority')
    enqueued_at = fields.Timestamp('Enqueued at', required=True)
    scheduled_at = fields.Timestamp('Scheduled at')
    expected_at = fields.Timestamp('Expected at')
    # The order among ready tasks of one priority: the deadline, or the
    # time the task became ready when it has none.
    due_at = fields.Timestamp('Due at')
    dequeued_at = fields.Timestamp('Dequeued at')
    finished_at = fields.Timestamp('Finished at')
    attempts = fields.Integer('Attempts')
    # How many times the task was given back after its worker died.
    rescues = fields.Integer('Rescues')
    max_attempts = fields.Integer('Maximum attempts')
    timeout = fields.Float('Timeout in seconds')
    error = fields.Text('Error')
    traceback = fields.Text('Traceback')
    worker = fields.Integer('Worker')
    unique_key = fields.Char('Unique key')
    result = fields.Text('Result')

    _order = [('id', 'ASC')]
    # The claim walks the first index in execution order and so never
    # reads finished rows, however many the table keeps.
    _sql_indexes = [
        ('ir_queue_claim_index', ['priority', 'due_at', 'id'],
            _state_is('pending')),
        ('ir_queue_scheduled_index', ['scheduled_at'],
            _state_is('scheduled')),
        ('ir_queue_running_index', ['worker'], _state_is('running')),
        ('ir_queue_finished_index', ['finished_at'],
            _state_is('done', 'failed', 'cancelled')),
        # Only the tasks not yet finished: an index of every row would
        # grow with the history and slow each update of a task.
        ('ir_queue_active_index', ['state', 'name'],
            _state_is('pending', 'scheduled', 'running')),
        # The database refuses a second waiting copy of a unique task.
        ('ir_queue_unique_index', ['unique_key'],
            _state_is(*WAITING_STATES)
            & (Column(Table('ir_queue'), 'unique_key') != None),  # noqa: E711
            True),
        ]


    # Queued rows may wait in the transaction's buffer: write them before
    # anything reads the table through the model.
    @classmethod
    def search(cls, *args, **kwargs):
        """Search the tasks, including those queued by this transaction."""
        _flush()
        return super().search(*args, **kwargs)

    @classmethod
    def search_count(cls, domain):
        """Count the tasks, including those queued by this transaction."""
        _flush()
        return super().search_count(domain)

    @classmethod
    def _fetch(cls, ids, names):
        _flush()
        return super()._fetch(ids, names)


def _flush():
    from ..transaction import Transaction
    from .enqueue import flush_buffer
    flush_buffer(Transaction())


class Worker(ModelSQL):
    """A worker process serving a database, known while it is alive."""

    __name__ = 'ir.queue.worker'

    host = fields.Char('Host')
    pid = fields.Integer('Process id')
    manager_pid = fields.Integer('Manager process id')
    # The worker row of the manager that supervises this process: while
    # the manager lives, it alone gives back the tasks of its children.
    manager = fields.Integer('Manager')
    queues = fields.Char('Queues')
    started_at = fields.Timestamp('Started at')
    # Written by the manager every second for itself and its processes.
    last_seen = fields.Timestamp('Last seen')
