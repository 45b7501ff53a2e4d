"""The interface that every backend implements."""
import logging

from sql import Flavor, Table

logger = logging.getLogger(__name__)

# The SQL types of the field kinds, overridden per backend.
SQL_TYPES = {
    'id': 'BIGINT',
    'reference': 'BIGINT',
    'char': 'VARCHAR',
    'text': 'TEXT',
    'integer': 'INTEGER',
    'biginteger': 'BIGINT',
    'float': 'DOUBLE PRECISION',
    'numeric': 'NUMERIC',
    'boolean': 'BOOLEAN',
    'date': 'DATE',
    'datetime': 'TIMESTAMP',
    'timestamp': 'TIMESTAMP',
    'json': 'TEXT',
}


class Database:
    """A named database of one backend, with its pool of connections."""

    flavor = Flavor()
    sql_types = SQL_TYPES
    # Abilities that callers probe rather than guessing from the name.
    has_returning = False
    has_select_for_skip_locked = False
    has_channel = False
    has_advisory_lock = False
    has_sequence = False
    has_on_conflict = False
    has_multiple_statements = False
    has_copy = False
    has_array = False
    # Whether two transactions may write at once; else a writer waits
    # for the other to end.
    has_concurrent_writers = True

    def __init__(self, name: str):
        self.name = name

    def __repr__(self):
        return f'<{type(self).__name__} {self.name!r}>'

    # Life of the database itself.
    def exists(self) -> bool:
        """Tell whether the database exists."""
        raise NotImplementedError

    def create(self):
        """Create the database, empty."""
        raise NotImplementedError

    def drop(self):
        """Drop the database and close its connections."""
        raise NotImplementedError

    def lock_schema(self, connection):
        """Keep other processes from changing the schema until commit."""

    # Connections.
    def get_connection(self, readonly=False, autocommit=False):
        """Return a connection from the pool, in a new transaction."""
        raise NotImplementedError

    def put_connection(self, connection, close=False):
        """Give a connection back to the pool, or close it."""
        raise NotImplementedError

    def close(self):
        """Close every connection of the pool."""

    def prepare_for_claims(self, connection):
        """Set up a connection that claims tasks and holds worker locks."""

    @staticmethod
    def is_alive(connection):
        """Tell, without a round trip, whether an idle connection works."""
        return True

    def begin(self, connection, readonly=False):
        """Start a transaction where the driver does not do it itself."""

    # Errors.
    def is_serialization_failure(self, exception) -> bool:
        """Tell whether retrying the transaction could succeed."""
        return False

    def is_connection_error(self, exception) -> bool:
        """Tell whether the connection to the server is lost."""
        return False

    def is_integrity_error(self, exception) -> bool:
        """Tell whether a constraint refused the change."""
        return False

    # Schema.
    def quote_identifier(self, name: str) -> str:
        """Return the name quoted as an SQL identifier."""
        if '\0' in name:
            raise ValueError(f'invalid SQL identifier: {name!r}')
        return '"' + name.replace('"', '""') + '"'

    def literal(self, value) -> str:
        """Return a constant as SQL, for statements without parameters."""
        if value is None:
            return 'NULL'
        if isinstance(value, bool):
            return 'TRUE' if value else 'FALSE'
        if isinstance(value, int):
            return str(value)
        if isinstance(value, str):
            if '\0' in value:
                raise ValueError(f'invalid SQL literal: {value!r}')
            return "'" + value.replace("'", "''") + "'"
        raise TypeError(f'no SQL literal for {value!r}')

    def _flavored(self, query):
        # Queries of the backend itself may run outside a transaction,
        # where nobody has set the flavor of this backend.
        previous = Flavor.get()
        Flavor.set(self.flavor)
        try:
            return str(query), query.params
        finally:
            Flavor.set(previous)

    def render_inline(self, expression) -> str:
        """Return a python-sql expression with its parameters inlined.

        Data definition statements take no parameters, so the few
        constants they need are written as quoted literals.
        """
        text, params = self._flavored(expression)
        placeholder = '?' if self.flavor.paramstyle == 'qmark' else '%s'
        parts = text.split(placeholder)
        if len(parts) != len(params) + 1:
            raise ValueError(f'cannot inline {text!r}')
        result = parts[0]
        for value, part in zip(params, parts[1:]):
            result += self.literal(value) + part
        return result

    def table_exists(self, connection, table_name: str) -> bool:
        """Tell whether the table exists."""
        raise NotImplementedError

    def columns(self, connection, table_name: str) -> set[str]:
        """Return the column names of the table."""
        raise NotImplementedError

    def create_table(self, connection, table_name: str, columns):
        """Create the table with its id column and the given columns.

        columns is a list of (name, SQL type, SQL constraint or '').
        """
        quote = self.quote_identifier
        definitions = [f'{quote("id")} {self.id_definition}']
        definitions += [
            ' '.join(filter(None, (quote(name), sql_type, constraint)))
            for name, sql_type, constraint in columns]
        self.execute_ddl(
            connection,
            f'CREATE TABLE {quote(table_name)} '
            f'({", ".join(definitions)})')

    def add_column(self, connection, table_name, name, sql_type,
                   constraint=''):
        """Add a column to an existing table."""
        quote = self.quote_identifier
        self.execute_ddl(
            connection,
            ' '.join(filter(None, (
                f'ALTER TABLE {quote(table_name)} ADD COLUMN',
                quote(name), sql_type, constraint))))

    def create_index(self, connection, table_name, name, columns,
                     where=None, unique=False):
        """Create an index unless one of that name exists.

        columns is a list of column names, each optionally followed by
        ' DESC'; where is a python-sql condition for a partial index.
        """
        quote = self.quote_identifier
        parts = []
        for column in columns:
            column_name, _, direction = column.partition(' ')
            if direction not in ('', 'ASC', 'DESC'):
                raise ValueError(f'invalid index column: {column!r}')
            parts.append(' '.join(filter(None, (
                quote(column_name), direction))))
        statement = (
            f'CREATE {"UNIQUE " if unique else ""}INDEX IF NOT EXISTS '
            f'{quote(name)} ON {quote(table_name)} ({", ".join(parts)})')
        if where is not None:
            statement += ' WHERE ' + self.render_inline(where)
        self.execute_ddl(connection, statement)

    def execute_ddl(self, connection, statement: str):
        """Run a data definition statement built from quoted parts."""
        logger.debug('%s: %s', self.name, statement)
        cursor = connection.cursor()
        cursor.execute(statement)

    def sql_type(self, kind: str) -> str:
        """Return the SQL type of a field kind."""
        return self.sql_types[kind]

    def next_ids(self, connection, table: Table, count: int) -> list[int]:
        """Reserve ids for rows that will be inserted later."""
        raise NotImplementedError
