"""The PostgreSQL backend, through psycopg2 and its connection pool.

Transactions run in REPEATABLE READ, as in Tryton: a task sees one
snapshot from its first statement to its commit, and a concurrent update
of the same row is reported as a serialization failure to retry.
"""
import datetime
import io
import logging
import select
import socket
import threading

import psycopg2
import psycopg2.errorcodes
import psycopg2.extensions
import psycopg2.pool
import psycopg2.sql
from sql import Flavor, Select, Table
from sql.functions import Function

from ..config import config
from ..exceptions import DatabaseNotFound, TrytondQueueError
from .base import Database as BaseDatabase

__all__ = ['Database']

logger = logging.getLogger(__name__)

REPEATABLE_READ = psycopg2.extensions.ISOLATION_LEVEL_REPEATABLE_READ
# SQLSTATE classes and codes that mean the connection is gone.
CONNECTION_STATES = ('08', '57P01', '57P02', '57P03')
RETRYABLE_STATES = (
    psycopg2.errorcodes.SERIALIZATION_FAILURE,
    psycopg2.errorcodes.DEADLOCK_DETECTED,
)


class NextVal(Function):
    __slots__ = ()
    _function = 'NEXTVAL'


class GenerateSeries(Function):
    __slots__ = ()
    _function = 'GENERATE_SERIES'


# Backslash, tab, newline and carriage return have a meaning in COPY's
# text format.
_COPY_ESCAPES = str.maketrans({
    '\\': '\\\\', '\t': '\\t', '\n': '\\n', '\r': '\\r'})


def _copy_text(value):
    """Return a value in COPY's text format."""
    if value is None:
        return '\\N'
    if isinstance(value, str):
        # Searching is much faster than translating, and few values
        # hold a character to escape.
        if ('\\' in value or '\t' in value or '\n' in value
                or '\r' in value):
            return value.translate(_COPY_ESCAPES)
        return value
    if isinstance(value, bool):
        return 't' if value else 'f'
    if isinstance(value, datetime.datetime):
        return value.isoformat(' ')
    return str(value)


class AdvisoryXactLock(Function):
    __slots__ = ()
    _function = 'PG_ADVISORY_XACT_LOCK'


# The key of the advisory lock that serialises schema changes.
SCHEMA_LOCK = 0x7472_7951


class Database(BaseDatabase):
    """A PostgreSQL database reached through ``[database] uri``."""

    flavor = Flavor(ilike=True)
    id_definition = 'BIGSERIAL PRIMARY KEY'
    has_returning = True
    has_select_for_skip_locked = True
    has_channel = True
    has_advisory_lock = True
    has_sequence = True
    has_on_conflict = True
    has_statement_timeout = True
    has_multiple_statements = True
    has_copy = True
    has_array = True

    def __init__(self, name):
        super().__init__(name)
        self.uri = config.get('database', 'uri')
        self.minconn = config.getint('database', 'minconn', fallback=1)
        self.maxconn = config.getint('database', 'maxconn', fallback=64)
        self._pool = None
        self._lock = threading.Lock()

    def connect_kwargs(self, database_name=None):
        """Return the arguments of psycopg2.connect for a database."""
        return {'dsn': self.uri, 'dbname': database_name or self.name}

    def _server_connection(self):
        # Creating or dropping a database is done from the maintenance
        # database, outside any transaction.
        try:
            connection = psycopg2.connect(
                **self.connect_kwargs('postgres'))
        except psycopg2.OperationalError as exception:
            raise TrytondQueueError(
                f'Cannot connect to the PostgreSQL server of '
                f'{self.uri!r}: {exception}'.strip()
                + ' Check [database] uri and that the server runs.'
                ) from exception
        connection.autocommit = True
        return connection

    def exists(self):
        """Tell whether the database exists on the server."""
        connection = self._server_connection()
        try:
            pg_database = Table('pg_database')
            cursor = connection.cursor()
            cursor.execute(*self._flavored(pg_database.select(
                pg_database.datname,
                where=pg_database.datname == self.name)))
            return cursor.fetchone() is not None
        finally:
            connection.close()

    def create(self):
        """Create the database, in UTF-8."""
        connection = self._server_connection()
        try:
            connection.cursor().execute(psycopg2.sql.SQL(
                "CREATE DATABASE {} TEMPLATE template0 ENCODING 'UTF8'"
                ).format(psycopg2.sql.Identifier(self.name)))
        finally:
            connection.close()

    def drop(self):
        """Drop the database, ending the sessions still connected."""
        self.close()
        connection = self._server_connection()
        try:
            connection.cursor().execute(psycopg2.sql.SQL(
                'DROP DATABASE IF EXISTS {} WITH (FORCE)').format(
                psycopg2.sql.Identifier(self.name)))
        finally:
            connection.close()

    def _get_pool(self):
        if self._pool is None:
            with self._lock:
                if self._pool is None:
                    try:
                        self._pool = psycopg2.pool.ThreadedConnectionPool(
                            self.minconn, self.maxconn,
                            **self.connect_kwargs())
                    except psycopg2.OperationalError as exception:
                        self._raise_not_found(exception)
                        raise
        return self._pool

    def connect(self, autocommit=True):
        """Return a new connection of its own, outside the pool.

        Workers use it for LISTEN and for the session locks that prove
        they are alive, which must outlive any transaction.
        """
        try:
            connection = psycopg2.connect(**self.connect_kwargs())
        except psycopg2.OperationalError as exception:
            self._raise_not_found(exception)
            raise
        connection.autocommit = autocommit
        return connection

    def _raise_not_found(self, exception):
        # The server gives the same error class for a missing database
        # as for a refused connection: ask it which case this is.
        if not self.exists():
            raise DatabaseNotFound(
                f'The PostgreSQL database {self.name!r} does not exist '
                f'on {self.uri!r}: run "trytond-queue init -d '
                f'{self.name}".') from exception

    def get_connection(self, readonly=False, autocommit=False):
        """Return a pooled connection, replacing those found broken."""
        pool = self._get_pool()
        for _ in range(self.maxconn + 1):
            connection = pool.getconn()
            if self.is_alive(connection):
                break
            logger.info(
                '%s: replacing a broken connection of the pool', self.name)
            pool.putconn(connection, close=True)
        else:
            raise TrytondQueueError(
                f'No working connection to {self.name!r} could be had.')
        if (connection.autocommit != autocommit
                or connection.readonly != readonly
                or connection.isolation_level != REPEATABLE_READ):
            connection.set_session(
                isolation_level=REPEATABLE_READ, readonly=readonly,
                autocommit=autocommit)
        return connection

    @staticmethod
    def is_alive(connection):
        """Tell, without a round trip, whether an idle connection works."""
        if connection.closed:
            return False
        # An idle connection has nothing to read unless the server sent
        # an error before closing it (a terminated backend, a restart).
        # libpq would notice only at the next query, so peek at the
        # socket: it costs no round trip, and select says when to.
        readable, _, _ = select.select([connection], [], [], 0)
        if not readable:
            return True
        with socket.fromfd(
                connection.fileno(), socket.AF_INET,
                socket.SOCK_STREAM) as peer:
            try:
                waiting = peer.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
            except BlockingIOError:
                return True
            except OSError:
                return False
        # End of stream, or an ErrorResponse message ('E'): the server
        # has ended the session.
        return waiting not in (b'', b'E')

    def put_connection(self, connection, close=False):
        """Give the connection back to the pool, rolled back."""
        pool = self._pool
        if pool is None or pool.closed:
            connection.close()
            return
        close = close or connection.closed
        if not close and (connection.info.transaction_status
                != psycopg2.extensions.TRANSACTION_STATUS_IDLE):
            try:
                connection.rollback()
            except psycopg2.Error:
                close = True
        try:
            pool.putconn(connection, close=close)
        except psycopg2.pool.PoolError:
            # The pool was closed and replaced while the connection was
            # out: it belongs to no pool any more.
            connection.close()

    def close(self):
        """Close every connection of the pool."""
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None and not pool.closed:
            pool.closeall()

    def is_serialization_failure(self, exception):
        """Tell whether retrying the transaction could succeed."""
        return (isinstance(exception, psycopg2.Error)
            and exception.pgcode in RETRYABLE_STATES)

    def is_connection_error(self, exception):
        """Tell whether the connection to the server is lost."""
        if isinstance(exception, psycopg2.InterfaceError):
            return True
        if not isinstance(exception, psycopg2.OperationalError):
            return False
        code = exception.pgcode
        return code is None or code.startswith(CONNECTION_STATES)

    def is_integrity_error(self, exception):
        """Tell whether a constraint refused the change."""
        return isinstance(exception, psycopg2.IntegrityError)

    def table_exists(self, connection, table_name):
        """Tell whether the table exists in the current schema."""
        tables = Table('tables', 'information_schema')
        cursor = connection.cursor()
        cursor.execute(*self._flavored(tables.select(
            tables.table_name,
            where=(tables.table_name == table_name)
            & (tables.table_schema == CurrentSchema()))))
        return cursor.fetchone() is not None

    def columns(self, connection, table_name):
        """Return the column names of the table."""
        columns = Table('columns', 'information_schema')
        cursor = connection.cursor()
        cursor.execute(*self._flavored(columns.select(
            columns.column_name,
            where=(columns.table_name == table_name)
            & (columns.table_schema == CurrentSchema()))))
        return {name for name, in cursor}

    def prepare_for_claims(self, connection):
        """Make claims cheap on a connection that runs only claims.

        A claim's commit need not wait for its WAL to reach the disk:
        the run that follows commits synchronously after it, and a
        claim lost in a server crash only leaves the task pending.  The
        ordered scan of the claim index is forced, since a queue's
        statistics are often those of an empty table, which makes the
        planner sort every pending row to return a few.
        """
        connection.cursor().execute(
            'SET synchronous_commit = off; '
            'SET enable_bitmapscan = off; SET enable_sort = off')

    def copy_rows(self, connection, table_name, columns, rows):
        """Insert many rows at once with COPY, the bulk-load protocol.

        COPY parses rows several times faster than a multi-row INSERT
        of as many parameters, which matters for the thousands of tasks
        one transaction may queue.  It is not a query python-sql can
        write: the identifiers are quoted by psycopg2 and the values
        escaped in COPY's text format below.
        """
        statement = psycopg2.sql.SQL('COPY {} ({}) FROM STDIN').format(
            psycopg2.sql.Identifier(table_name),
            psycopg2.sql.SQL(', ').join(
                psycopg2.sql.Identifier(c) for c in columns))
        text = ''.join(
            '\t'.join(map(_copy_text, row)) + '\n' for row in rows)
        connection.cursor().copy_expert(statement, io.StringIO(text))

    def lock_schema(self, connection):
        """Wait for the other processes that change the schema."""
        connection.cursor().execute(*self._flavored(
            Select([AdvisoryXactLock(SCHEMA_LOCK)])))

    def next_ids(self, connection, table, count):
        """Reserve count ids from the sequence of the table's id."""
        cursor = connection.cursor()
        cursor.execute(*self._flavored(Select(
            [NextVal(table._name + '_id_seq')],
            from_=GenerateSeries(1, count))))
        return [id_ for id_, in cursor]


class CurrentSchema(Function):
    __slots__ = ()
    _function = 'CURRENT_SCHEMA'

