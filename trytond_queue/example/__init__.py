"""The example application of the demo: the seed of the queue.

Add ``trytond_queue.example`` to ``[pool] modules`` to use it.
"""
from ..model import ModelSQL, fields
from ..pool import Pool

__all__ = ['Record', 'register']


class Record(ModelSQL):
    "Example Record"
    __name__ = 'example.record'

    value = fields.Integer('Value')

    @classmethod
    def launch(cls, records):
        """Queue a call of process for each record."""
        for record in records:
            cls.__queue__.process(record, 42)

    def process(self, value):
        """Store value on the record."""
        self.value = value
        self.save()


def register():
    """Register the example models."""
    Pool.register(Record, module='trytond_queue.example')
