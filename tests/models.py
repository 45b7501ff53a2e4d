"""Models of the tests, registered through ``[pool] modules``."""
import os
import time

from trytond_queue.exceptions import UserError
from trytond_queue.model import Model, ModelSQL, fields
from trytond_queue.pool import Pool
from trytond_queue.transaction import Transaction


class Party(ModelSQL):
    """A record that others link to."""

    __name__ = 'test.party'

    name = fields.Char('Name', required=True)


class Everything(ModelSQL):
    """A record with a field of every kind."""

    __name__ = 'test.everything'

    char = fields.Char()
    text = fields.Text()
    integer = fields.Integer()
    float = fields.Float()
    numeric = fields.Numeric()
    boolean = fields.Boolean()
    date = fields.Date()
    datetime = fields.DateTime()
    timestamp = fields.Timestamp()
    dict = fields.Dict()
    party = fields.Many2One('test.party')


class Seed(Model):
    """The seed example, word for word but for the import line."""

    __name__ = 'my_model'

    @classmethod
    def launch(cls, records):
        for record in records:
            cls.__queue__.process(record, 42)

    def process(self, value):
        self.value = value


class SeedSQL(ModelSQL):
    """The seed example with a stored field."""

    __name__ = 'test.seed'

    value = fields.Integer()

    @classmethod
    def launch(cls, records):
        for record in records:
            cls.__queue__.process(record, 42)

    def process(self, value):
        self.value = value
        self.save()


class Log(ModelSQL):
    """What the tasks did: one row per call, with what they received."""

    __name__ = 'test.log'

    name = fields.Char()
    user = fields.Integer()
    context = fields.Dict()
    args = fields.Dict()
    pid = fields.Integer()
    started = fields.Float()
    ended = fields.Float()

    @classmethod
    def record(cls, records, *args, **kwargs):
        """Log the call; the records are ids here."""
        transaction = Transaction()
        cls.create([{
            'name': 'record',
            'user': transaction.user,
            'context': dict(transaction.context),
            'args': {
                'ids': [getattr(r, 'id', r) for r in _as_list(records)],
                'args': list(args), 'kwargs': kwargs},
            'pid': os.getpid(),
            }])

    @classmethod
    def insert(cls, records, name):
        """Insert one row, for counting how often a task ran."""
        cls.create([{'name': name, 'pid': os.getpid()}])

    @classmethod
    def fail(cls, records, message='boom'):
        """Insert a row, then raise: the row must be rolled back."""
        cls.create([{'name': 'fail', 'pid': os.getpid()}])
        raise ValueError(message)

    @classmethod
    def refuse(cls, records):
        """Raise a business error: the task fails at once."""
        raise UserError('refused by a business rule')

    @classmethod
    def sleep(cls, records, seconds, name='sleep'):
        """Record start and end around a sleep."""
        started = time.time()
        time.sleep(seconds)
        cls.create([{
            'name': name, 'pid': os.getpid(), 'started': started,
            'ended': time.time()}])

    @classmethod
    def insert_slowly(cls, records, name, seconds):
        """Insert one row and take some time, for the chaos test."""
        cls.create([{'name': name, 'pid': os.getpid()}])
        time.sleep(seconds)

    @classmethod
    def sql_sleep(cls, records, seconds):
        """Run one long SQL statement (PostgreSQL)."""
        Transaction().connection.cursor().execute(
            'SELECT pg_sleep(%s)', (seconds,))

    @classmethod
    def conflict(cls, records, log_id):
        """Write a row another transaction changed after our snapshot.

        The first time only: it marks the row, so that the retry goes
        through.
        """
        log, = cls.browse([log_id])
        if log.name == 'untouched':
            with Transaction().start(
                    Transaction().database.name, 0):
                other_log, = cls.browse([log_id])
                other_log.name = 'touched'
                other_log.save()
        cls.write([log], {'args': {'written': True}})

    @classmethod
    def crash(cls, records):
        """Kill the worker process from inside the task."""
        os._exit(3)

    @classmethod
    def answer(cls, records):
        """Return a JSON-able value."""
        return {'answer': 42}

    def _private(self):
        """A private method that queues must refuse."""


def _as_list(records):
    return records if isinstance(records, list) else [records]


def register():
    """Register the test models."""
    Pool.register(
        Party, Everything, Seed, SeedSQL, Log, module='tests.models')
