"""The task queue: the ``ir.queue`` model and the engine that runs it."""
from ..pool import Pool
from .model import Queue, Worker

__all__ = ['register', 'Queue', 'Worker']


def register():
    """Register the models of the queue in the pool."""
    Pool.register(Queue, Worker, module='trytond_queue.queue')
