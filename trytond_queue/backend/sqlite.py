"""The SQLite backend, from the standard library.

SQLite has one writer at a time for the whole file: a transaction that
may write starts with ``BEGIN IMMEDIATE`` so that it waits for the
writer's lock up front (bounded by the busy timeout) instead of failing
half-way when it first writes.  There are no row locks, no LISTEN/NOTIFY
and no advisory locks; the queue uses other means on this backend.
"""
import datetime
import decimal
import os
import sqlite3
import threading

from sql import Flavor, Table

from ..config import config
from ..exceptions import DatabaseNotFound
from .base import SQL_TYPES
from .base import Database as BaseDatabase

__all__ = ['Database']


def _adapt_datetime(value):
    # Always six digits of microseconds so that text order is time order.
    return value.isoformat(' ', 'microseconds')


sqlite3.register_adapter(datetime.datetime, _adapt_datetime)
sqlite3.register_adapter(datetime.date, datetime.date.isoformat)
sqlite3.register_adapter(decimal.Decimal, str)


class Connection(sqlite3.Connection):
    """A connection that remembers whether it is read-only."""

    readonly = False


class Database(BaseDatabase):
    """A database file ``NAME.sqlite`` in ``[database] path``."""

    flavor = Flavor(
        paramstyle='qmark', ilike=False, max_limit=-1, null_ordering=True)
    # A NUMERIC column compares as numbers but keeps only 15 significant
    # digits of a Decimal, which it stores as a float; a TEXT column
    # would keep every digit but compare '10' before '9'.
    sql_types = dict(
        SQL_TYPES, float='REAL', boolean='BOOLEAN', numeric='NUMERIC')
    id_definition = 'INTEGER PRIMARY KEY AUTOINCREMENT'
    has_returning = sqlite3.sqlite_version_info >= (3, 35)
    has_on_conflict = sqlite3.sqlite_version_info >= (3, 24)
    has_concurrent_writers = False
    # An embedded database is a file that initialisation may create.
    created_on_init = True

    def __init__(self, name):
        super().__init__(name)
        directory = os.path.expanduser(config.get('database', 'path'))
        self.path = os.path.join(directory, name + '.sqlite')
        self.busy_timeout = config.getfloat(
            'database', 'timeout', fallback=1800) or 1800
        self._idle = []
        self._lock = threading.Lock()

    def exists(self):
        """Tell whether the database file exists."""
        return os.path.isfile(self.path)

    def create(self):
        """Create the database file in write-ahead-log mode."""
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        connection = sqlite3.connect(self.path, isolation_level=None)
        try:
            # The journal mode is kept in the file: set it once here.
            connection.execute('PRAGMA journal_mode=WAL')
        finally:
            connection.close()

    def drop(self):
        """Remove the database file and its journals."""
        self.close()
        for suffix in ('', '-wal', '-shm', '-journal'):
            try:
                os.remove(self.path + suffix)
            except FileNotFoundError:
                pass

    def _connect(self):
        if not self.exists():
            raise DatabaseNotFound(
                f'The SQLite database {self.name!r} does not exist at '
                f'{self.path!r}: run "trytond-queue init -d {self.name}" '
                'or check [database] path.')
        connection = sqlite3.connect(
            self.path, isolation_level=None, check_same_thread=False,
            timeout=self.busy_timeout, factory=Connection)
        connection.execute('PRAGMA foreign_keys = ON')
        # NORMAL loses nothing on a crash of the process in WAL mode,
        # only on a power loss, and saves an fsync per commit.
        connection.execute('PRAGMA synchronous = NORMAL')
        connection.execute('PRAGMA case_sensitive_like = ON')
        return connection

    def connect(self):
        """Return a new autocommit connection of its own, outside the pool.

        Each statement on it is a transaction of its own.
        """
        return self._connect()

    def get_connection(self, readonly=False, autocommit=False):
        """Return a connection with a transaction begun unless autocommit."""
        with self._lock:
            connection = self._idle.pop() if self._idle else None
        if connection is None:
            connection = self._connect()
        if connection.readonly != readonly:
            connection.execute(
                'PRAGMA query_only = ' + ('ON' if readonly else 'OFF'))
            connection.readonly = readonly
        if not autocommit:
            self.begin(connection, readonly)
        return connection

    def begin(self, connection, readonly=False):
        """Begin a transaction, taking the write lock unless read-only."""
        connection.execute('BEGIN' if readonly else 'BEGIN IMMEDIATE')

    def put_connection(self, connection, close=False):
        """Give the connection back, rolled back, or close it."""
        if close:
            connection.close()
            return
        if connection.in_transaction:
            connection.rollback()
        with self._lock:
            self._idle.append(connection)

    def close(self):
        """Close the idle connections."""
        with self._lock:
            idle, self._idle = self._idle, []
        for connection in idle:
            connection.close()

    def is_serialization_failure(self, exception):
        """Tell whether the database was locked by another writer."""
        return (isinstance(exception, sqlite3.OperationalError)
            and 'locked' in str(exception))

    def is_connection_error(self, exception):
        """SQLite has no connection to lose."""
        return False

    def is_integrity_error(self, exception):
        """Tell whether a constraint refused the change."""
        return isinstance(exception, sqlite3.IntegrityError)

    def table_exists(self, connection, table_name):
        """Tell whether the table exists."""
        master = Table('sqlite_master')
        cursor = connection.cursor()
        cursor.execute(*self._flavored(master.select(
            master.name,
            where=(master.type == 'table') & (master.name == table_name))))
        return cursor.fetchone() is not None

    def columns(self, connection, table_name):
        """Return the column names of the table."""
        cursor = connection.cursor()
        # The table name is a bound parameter of a fixed statement.
        cursor.execute(
            'SELECT name FROM pragma_table_info(?)', (table_name,))
        return {name for name, in cursor}
