"""The benchmark's workload: the seed example on a stored record.

The benchmark names this module in ``[pool] modules`` and puts its
folder on the Python path of the workers, so that it depends on nothing
but trytond_queue.
"""
import time

from trytond_queue.model import ModelSQL, fields
from trytond_queue.pool import Pool

__all__ = ['Record', 'register']


class Record(ModelSQL):
    """A record that the seed task writes."""

    __name__ = 'bench.record'

    value = fields.Integer()
    started = fields.Float()

    @classmethod
    def launch(cls, records):
        """Queue the seed task of each record, word for word the seed."""
        for record in records:
            cls.__queue__.process(record, 42)

    @classmethod
    def launch_empty(cls, records):
        """Queue the task with an empty body for each record."""
        for record in records:
            cls.__queue__.nothing(record, 42)

    def process(self, value):
        """Write the value on the record: the seed task."""
        self.value = value
        self.save()

    def nothing(self, value):
        """Do nothing: what is left is the cost of the queue."""

    def stamp(self, value):
        """Keep the time at which the task started, for the latency."""
        self.started = time.time()
        self.save()


def register():
    """Register the models of the benchmark."""
    Pool.register(Record, module=__name__)
