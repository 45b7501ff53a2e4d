"""LISTEN/NOTIFY: how committed tasks wake the workers at once."""
from sql import Select
from sql.functions import Function

__all__ = ['CHANNEL', 'CANCEL_CHANNEL', 'notify', 'notify_query', 'listen']

# One channel per database: notifications never cross databases.
CHANNEL = 'ir_queue'
# The managers listen here for the ids of running tasks to cancel.
CANCEL_CHANNEL = 'ir_queue_cancel'


class PgNotify(Function):
    __slots__ = ()
    _function = 'PG_NOTIFY'


def notify_query(payload='', channel=CHANNEL):
    """Return the query that notifies a channel."""
    return Select([PgNotify(channel, payload)])


def notify(transaction, payload='', channel=CHANNEL):
    """Wake the workers when the transaction commits.

    PostgreSQL delivers the notification at commit and only then, and
    folds identical notifications of one transaction into one.
    """
    cursor = transaction.connection.cursor()
    cursor.execute(*notify_query(payload, channel))


def listen(connection, channel=CHANNEL):
    """Subscribe the autocommit connection to a channel of the queue."""
    import psycopg2.sql
    connection.cursor().execute(psycopg2.sql.SQL('LISTEN {}').format(
        psycopg2.sql.Identifier(channel)))
