"""Tasks stored directly in a given state, for the tests."""
from trytond_queue.pool import Pool
from trytond_queue.queue.model import FINAL_STATES
from trytond_queue.queue.store import utcnow


def add_task(env, state='pending', **values):
    """Store a task in the given state directly; return its id."""
    now = utcnow()
    row = {
        'name': 'default', 'model': 'test.log', 'method': 'record',
        'data': {
            'model': 'test.log', 'method': 'record', 'instances': [],
            'args': [], 'kwargs': {}, 'user': 0, 'context': {}},
        'state': state, 'priority': 0, 'enqueued_at': now, 'due_at': now,
        'attempts': 0, 'max_attempts': 5,
        'finished_at': now if state in FINAL_STATES else None,
        }
    row.update(values)
    with env.transaction():
        task, = Pool().get('ir.queue').create([row])
        return task.id
