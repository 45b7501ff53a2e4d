"""ModelSQL: models whose records are the rows of a table."""
import functools
import re

from sql import Column, Flavor, Literal, Table
from sql.aggregate import Count

from ..exceptions import ModelError
from ..transaction import Transaction
from .domain import domain_to_condition
from .model import Model, dualmethod

__all__ = ['ModelSQL']

TABLE_NAME = re.compile(r'^[a-z_][a-z0-9_]{0,62}$')
# Rows per statement for reads and inserts: large enough to amortise the
# round trip, small enough for SQLite's limit of bound parameters.
CHUNK = 500
DIRECTIONS = {
    'ASC', 'DESC', 'ASC NULLS FIRST', 'ASC NULLS LAST',
    'DESC NULLS FIRST', 'DESC NULLS LAST',
    }


@functools.lru_cache(maxsize=1024)
def _cached_update(paramstyle, table_name, names, count):
    table = Table(table_name)
    query = table.update(
        [Column(table, n) for n in names], [None] * len(names),
        where=table.id.in_([0] * count))
    return str(query)


def _update_statement(table_name, names, count):
    """Return the UPDATE of names by id, rendered once per shape.

    Writes by id are the most frequent statement of tasks; rendering
    them with python-sql each time costs more than running them.  The
    parameters are the values in the order of names, then the ids.
    """
    return _cached_update(Flavor.get().paramstyle, table_name, names, count)


class ModelSQL(Model):
    """A model stored in the table ``_table`` (its name, dots as _)."""

    _table: str | None = None
    _order = [('id', 'ASC')]
    # Indexes beyond those of select fields:
    # (name, columns, where condition or None[, unique]).
    _sql_indexes: list = []

    def __init__(self, id=None, **values):
        super().__init__(id, **values)
        self._siblings = None

    @classmethod
    def __setup__(cls):
        """Name the table after the model unless it is named."""
        super().__setup__()
        table = cls._table or cls.__name__.replace('.', '_')
        if not TABLE_NAME.match(table):
            raise ModelError(
                f'The table name {table!r} of {cls.__name__!r} is not '
                'valid: use lower case letters, digits and "_", at most '
                '63 characters.')
        cls._table = table

    @classmethod
    def __table__(cls) -> Table:
        """Return the python-sql table of the model."""
        return Table(cls._table)

    # Schema.
    @classmethod
    def _create_table(cls, pool):
        """Create the table with its plain columns if it is missing."""
        database, connection = pool.database, Transaction().connection
        if database.table_exists(connection, cls._table):
            return
        columns = [
            (name, database.sql_type(field.kind), '')
            for name, field in cls._fields.items()
            if not field.sql_constraint(pool)]
        database.create_table(connection, cls._table, columns)

    @classmethod
    def __register__(cls, pool):
        """Add the missing columns and indexes to the table."""
        database, connection = pool.database, Transaction().connection
        existing = database.columns(connection, cls._table)
        for name, field in cls._fields.items():
            if name not in existing:
                database.add_column(
                    connection, cls._table, name,
                    database.sql_type(field.kind),
                    field.sql_constraint(pool))
        for name, field in cls._fields.items():
            if field.select:
                database.create_index(
                    connection, cls._table, f'{cls._table}_{name}_index',
                    [name])
        for name, columns, where, *unique in cls._sql_indexes:
            database.create_index(
                connection, cls._table, name, columns, where=where,
                unique=bool(unique and unique[0]))

    # Reading.
    @classmethod
    def _columns(cls, table, names):
        return [cls._fields[n].sql_column(table) for n in names]

    @classmethod
    def _check_names(cls, names):
        for name in names:
            if name != 'id' and name not in cls._fields:
                raise ModelError(
                    f'The model {cls.__name__!r} has no field {name!r}.')

    @classmethod
    def read(cls, ids, fields_names=None) -> list[dict]:
        """Return the values of the records as dictionaries, in order."""
        ids = [int(i) for i in ids]
        if fields_names is None:
            fields_names = list(cls._fields)
        cls._check_names(fields_names)
        names = [n for n in fields_names if n != 'id']
        rows = cls._fetch(ids, names)
        missing = [i for i in ids if i not in rows]
        if missing:
            raise ModelError(
                f'The records {missing!r} of {cls.__name__!r} do not '
                'exist or were deleted.')
        result = []
        for id_ in ids:
            values = {'id': id_}
            values.update((n, rows[id_][n]) for n in names)
            result.append(values)
        return result

    @classmethod
    def _fetch(cls, ids, names):
        """Return {id: {name: value}} of the existing records among ids."""
        table = cls.__table__()
        cursor = Transaction().connection.cursor()
        fields = [cls._fields[n] for n in names]
        rows = {}
        for start in range(0, len(ids), CHUNK):
            chunk = ids[start:start + CHUNK]
            cursor.execute(*table.select(
                table.id, *cls._columns(table, names),
                where=table.id.in_(chunk)))
            for row in cursor:
                rows[row[0]] = {
                    f.name: f.from_sql(v) for f, v in zip(fields, row[1:])}
        return rows

    def _get_value(self, name):
        try:
            return self._values[name]
        except KeyError:
            pass
        if name not in self._fields or self.id is None:
            raise AttributeError(f'{self!r} has no value for {name!r}')
        cache = Transaction().cache.setdefault(self.__name__, {})
        if self.id not in cache:
            # Read the records browsed together in one query.
            siblings = self._siblings or [self.id]
            wanted = [i for i in siblings if i not in cache][:CHUNK]
            if self.id not in wanted:
                wanted.append(self.id)
            cache.update(self._fetch(wanted, list(self._fields)))
            if self.id not in cache:
                raise ModelError(
                    f'The record {self!r} does not exist or was deleted.')
        return cache[self.id][name]

    @classmethod
    def browse(cls, ids) -> list['ModelSQL']:
        """Return the records of the ids, read lazily together."""
        ids = [int(i) for i in ids]
        records = [cls(i) for i in ids]
        for record in records:
            record._siblings = ids
        return records

    @classmethod
    def _order_by(cls, table, order):
        order = cls._order if order is None else order
        result = []
        for item in order:
            if (not isinstance(item, (list, tuple)) or len(item) != 2):
                raise ModelError(
                    f'An order is a list of (field, direction), not '
                    f'{item!r:.60}.')
            name, direction = item
            direction = (direction or 'ASC').upper()
            if direction not in DIRECTIONS:
                raise ModelError(
                    f'The direction {item[1]!r} of {name!r} is not one '
                    f'of {", ".join(sorted(DIRECTIONS))}.')
            cls._check_names([name])
            column = table.id if name == 'id' else (
                cls._fields[name].sql_column(table))
            way, _, nulls = direction.partition(' NULLS ')
            column = column.desc if way == 'DESC' else column.asc
            if not nulls and name != 'id':
                # NULL sorts as the largest value, as PostgreSQL and its
                # indexes do by default, on SQLite too.
                nulls = 'FIRST' if way == 'DESC' else 'LAST'
            if nulls:
                column = column.nulls_first if nulls == 'FIRST' else (
                    column.nulls_last)
            result.append(column)
        return result

    @classmethod
    def search(cls, domain, offset=0, limit=None, order=None, count=False):
        """Return the records that match the domain, in order."""
        if count:
            return cls.search_count(domain)
        table = cls.__table__()
        for name, value in (('offset', offset), ('limit', limit)):
            if value is not None and (
                    not isinstance(value, int) or value < 0):
                raise ModelError(
                    f'{name} must be a positive integer, not {value!r}.')
        query = table.select(
            table.id, where=domain_to_condition(cls, table, domain),
            order_by=cls._order_by(table, order),
            offset=offset or None, limit=limit)
        cursor = Transaction().connection.cursor()
        cursor.execute(*query)
        return cls.browse([id_ for id_, in cursor])

    @classmethod
    def search_count(cls, domain) -> int:
        """Return the number of records that match the domain."""
        table = cls.__table__()
        cursor = Transaction().connection.cursor()
        cursor.execute(*table.select(
            Count(Literal('*')),
            where=domain_to_condition(cls, table, domain)))
        return cursor.fetchone()[0]

    # Writing.
    @classmethod
    def _sql_values(cls, values):
        """Return the validated values as the driver takes them."""
        result = {}
        for name, value in values.items():
            field = cls._fields.get(name)
            if field is None:
                raise ModelError(
                    f'The model {cls.__name__!r} has no field {name!r}.')
            result[name] = field.sql_format(field.validate(value))
        return result

    @classmethod
    def _defaults(cls):
        defaults = {}
        for name in cls._fields:
            method = getattr(cls, f'default_{name}', None)
            if method is not None:
                defaults[name] = method()
        return defaults

    @classmethod
    def _check_required(cls, values):
        for name, field in cls._fields.items():
            if field.required and values.get(name) is None:
                raise ModelError(
                    f'The field {name!r} of {cls.__name__!r} is required.')

    # Columns are named with Column(table, name), never getattr(table,
    # name), since a field may be named like a method of Table (select,
    # update, alias...).
    @classmethod
    def create(cls, vlist) -> list['ModelSQL']:
        """Insert the records of the list of values; return them."""
        transaction = Transaction()
        database = transaction.database
        rows = []
        for values in vlist:
            values = dict(cls._defaults(), **values)
            cls._check_required(values)
            rows.append(cls._sql_values(values))
        table = cls.__table__()
        cursor = transaction.connection.cursor()
        if database.has_sequence:
            ids = database.next_ids(transaction.connection, table, len(rows))
            names = ['id'] + list(cls._fields)
            for start in range(0, len(rows), CHUNK):
                cursor.execute(*table.insert(
                    [Column(table, n) for n in names],
                    [[id_] + [row.get(n) for n in names[1:]]
                        for id_, row in zip(
                            ids[start:start + CHUNK],
                            rows[start:start + CHUNK])]))
        else:
            ids = []
            for row in rows:
                names = list(row)
                query = table.insert(
                    [Column(table, n) for n in names],
                    [[row[n] for n in names]])
                if not names:
                    query = table.insert()
                cursor.execute(*query)
                ids.append(cursor.lastrowid)
        return cls.browse(ids)

    @classmethod
    def write(cls, records, values, *args):
        """Write values on records; more pairs of them may follow."""
        if len(args) % 2:
            raise ModelError(
                'write takes records and values in pairs.')
        actions = [(records, values)] + list(zip(args[::2], args[1::2]))
        transaction = Transaction()
        cache = transaction.cache.setdefault(cls.__name__, {})
        cursor = transaction.connection.cursor()
        for records, values in actions:
            ids = [int(r) for r in records]
            sql_values = cls._sql_values(values)
            for name in sql_values:
                if cls._fields[name].required and sql_values[name] is None:
                    raise ModelError(
                        f'The field {name!r} of {cls.__name__!r} is '
                        'required.')
            if not ids or not sql_values:
                continue
            names = tuple(sql_values)
            values = [sql_values[n] for n in names]
            for start in range(0, len(ids), CHUNK):
                chunk = ids[start:start + CHUNK]
                cursor.execute(
                    _update_statement(cls._table, names, len(chunk)),
                    values + chunk)
            for id_ in ids:
                cache.pop(id_, None)

    @classmethod
    def delete(cls, records):
        """Delete the records."""
        ids = [int(r) for r in records]
        transaction = Transaction()
        table = cls.__table__()
        cursor = transaction.connection.cursor()
        for start in range(0, len(ids), CHUNK):
            cursor.execute(*table.delete(
                where=table.id.in_(ids[start:start + CHUNK])))
        # ON DELETE SET NULL and CASCADE change the rows of other models.
        transaction.cache.clear()
        # Whoever checked earlier which records exist must look again.
        transaction.deletions += 1

    @dualmethod
    def save(cls, records):
        """Create the new records and write the changes of the others."""
        new = [r for r in records if r.id is None]
        if new:
            created = cls.create([r._values for r in new])
            for record, saved in zip(new, created):
                record.id = saved.id
                record._values = {}
        for record in records:
            if record._values:
                values, record._values = record._values, {}
                cls.write([record], values)
