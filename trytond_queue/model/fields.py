"""Fields: typed attributes of models, stored as columns by ModelSQL."""
import datetime
import decimal

from sql import Column

from .. import encoding
from ..exceptions import ArgumentEncodingError, ModelError

__all__ = [
    'Field', 'Char', 'Text', 'Integer', 'Float', 'Numeric', 'Boolean',
    'Date', 'DateTime', 'Timestamp', 'Dict', 'Many2One',
    ]


class Field:
    """An attribute of a model with a type and, for ModelSQL, a column."""

    kind = None
    python_types = ()
    # The value that a NULL column stands for, as domains see it.
    null_value = None

    def __init__(self, string: str | None = None, required=False,
                 readonly=False, help: str = '', select=False):
        self.string = string
        self.required = required
        self.readonly = readonly
        self.help = help
        self.select = select
        self.name = None

    def __set_name__(self, owner, name):
        self.name = name
        if self.string is None:
            self.string = name.replace('_', ' ').capitalize()

    def __repr__(self):
        return f'<{type(self).__name__} {self.name}>'

    def __get__(self, instance, owner):
        if instance is None:
            return self
        return instance._get_value(self.name)

    def __set__(self, instance, value):
        instance._values[self.name] = self.validate(value)

    def validate(self, value):
        """Return value if the field can hold it, else raise ModelError."""
        if value is None or isinstance(value, self.python_types):
            return value
        raise ModelError(
            f'The field {self.name!r} holds '
            f'{" or ".join(t.__name__ for t in self.python_types)}, '
            f'not {type(value).__name__} {value!r:.60}.')

    def sql_column(self, table):
        """Return the column of the field in the table."""
        return Column(table, self.name)

    def sql_format(self, value):
        """Return value as the database driver takes it."""
        return value

    def from_sql(self, value):
        """Return the Python value of what the database returned."""
        return value

    def sql_constraint(self, pool) -> str:
        """Return the column constraint written at creation, if any."""
        return ''


class Char(Field):
    """A string on one line."""

    kind = 'char'
    python_types = (str,)

    def __init__(self, string=None, size: int | None = None, **kwargs):
        super().__init__(string, **kwargs)
        self.size = size

    def validate(self, value):
        """Refuse a value longer than size."""
        value = super().validate(value)
        if value is not None and self.size and len(value) > self.size:
            raise ModelError(
                f'The field {self.name!r} holds at most {self.size} '
                f'characters, not {len(value)}.')
        return value


class Text(Field):
    """A string of any length."""

    kind = 'text'
    python_types = (str,)


class Integer(Field):
    """An integer."""

    kind = 'integer'
    python_types = (int,)

    # The range of the SQL INTEGER of both backends' column types.
    minimum, maximum = -2 ** 31, 2 ** 31 - 1

    def validate(self, value):
        """Refuse booleans, which are integers to Python, and overflows."""
        value = super().validate(_not_bool(self, value))
        if value is not None and not self.minimum <= value <= self.maximum:
            raise ModelError(
                f'The field {self.name!r} holds integers from '
                f'{self.minimum} to {self.maximum}, not {value}.')
        return value


class Float(Field):
    """A floating point number."""

    kind = 'float'
    python_types = (float, int)

    def validate(self, value):
        """Store integers as floats; refuse NaN, which SQLite drops."""
        value = super().validate(_not_bool(self, value))
        if value is None:
            return None
        if value != value:
            raise ModelError(f'The field {self.name!r} cannot hold NaN.')
        return float(value)

    def from_sql(self, value):
        """Return a float."""
        return float(value) if value is not None else None


class Numeric(Field):
    """An exact decimal number."""

    kind = 'numeric'
    python_types = (decimal.Decimal, int)

    def validate(self, value):
        """Store integers as Decimal; refuse NaN."""
        value = super().validate(_not_bool(self, value))
        if value is None:
            return None
        value = decimal.Decimal(value)
        if value.is_nan():
            raise ModelError(f'The field {self.name!r} cannot hold NaN.')
        return value

    def from_sql(self, value):
        """Return a Decimal, whatever the driver gave."""
        if value is None or isinstance(value, decimal.Decimal):
            return value
        return decimal.Decimal(str(value))


class Boolean(Field):
    """True or False."""

    kind = 'boolean'
    python_types = (bool,)
    # As in Tryton, NULL is False: a domain on False matches NULL rows.
    null_value = False

    def validate(self, value):
        """Store None as False."""
        return bool(super().validate(value))

    def from_sql(self, value):
        """Return a bool; SQLite stores 0 and 1."""
        return bool(value)


class Date(Field):
    """A calendar date."""

    kind = 'date'
    python_types = (datetime.date,)

    def validate(self, value):
        """Refuse a datetime, which is a date to Python."""
        if isinstance(value, datetime.datetime):
            raise ModelError(
                f'The field {self.name!r} holds date, not datetime '
                f'{value!r}.')
        return super().validate(value)

    def from_sql(self, value):
        """Return a date; SQLite stores ISO text."""
        if isinstance(value, str):
            return datetime.date.fromisoformat(value)
        return value


class Timestamp(Field):
    """A naive date and time to the microsecond, in UTC by convention."""

    kind = 'timestamp'
    python_types = (datetime.datetime,)

    def validate(self, value):
        """Turn an aware datetime into the naive one of UTC."""
        value = super().validate(value)
        if value is not None and value.tzinfo is not None:
            value = value.astimezone(datetime.timezone.utc).replace(
                tzinfo=None)
        return value

    def from_sql(self, value):
        """Return a datetime; SQLite stores ISO text."""
        if isinstance(value, str):
            return datetime.datetime.fromisoformat(value)
        return value


class DateTime(Timestamp):
    """A naive date and time to the second, in UTC by convention."""

    kind = 'datetime'

    def validate(self, value):
        """Drop the microseconds, as Tryton does."""
        value = super().validate(value)
        return value.replace(microsecond=0) if value is not None else None


class Dict(Field):
    """A dictionary stored as typed JSON text."""

    kind = 'json'
    python_types = (dict,)

    def validate(self, value):
        """Refuse a dictionary that typed JSON cannot hold."""
        value = super().validate(value)
        if value is not None:
            try:
                encoding.dumps(value)
            except ArgumentEncodingError as exception:
                raise ModelError(
                    f'The field {self.name!r} cannot store '
                    f'{value!r:.60}: {exception.message}.') from exception
        return value

    def sql_format(self, value):
        """Return the JSON text of the dictionary."""
        return encoding.dumps(value) if value is not None else None

    def from_sql(self, value):
        """Return the dictionary of the JSON text."""
        return encoding.loads(value) if value is not None else None


class Many2One(Field):
    """A link to one record of another model, stored as its id."""

    kind = 'reference'

    def __init__(self, model_name: str, string=None,
                 ondelete: str = 'SET NULL', **kwargs):
        super().__init__(string, **kwargs)
        if ondelete not in ('CASCADE', 'SET NULL', 'RESTRICT'):
            raise ModelError(
                f'ondelete must be CASCADE, SET NULL or RESTRICT, '
                f'not {ondelete!r}.')
        self.model_name = model_name
        self.ondelete = ondelete

    def __get__(self, instance, owner):
        if instance is None:
            return self
        value = instance._get_value(self.name)
        if value is None or not isinstance(value, int):
            return value
        from ..pool import Pool
        return Pool().get(self.model_name)(value)

    def validate(self, value):
        """Take a record of the target model or an id."""
        if value is None or (
                isinstance(value, int) and not isinstance(value, bool)
                and value >= 0):
            return value
        if getattr(value, '__name__', None) == self.model_name:
            return value
        raise ModelError(
            f'The field {self.name!r} holds a record of '
            f'{self.model_name!r} or its id, not {value!r:.60}.')

    def sql_format(self, value):
        """Return the id of the record."""
        if value is None or isinstance(value, int):
            return value
        if value.id is None:
            raise ModelError(
                f'The record {value!r} of {self.name!r} must be saved '
                'before it is linked.')
        return value.id

    def sql_constraint(self, pool):
        """Reference the table of the target model."""
        target = pool.get(self.model_name)
        database = pool.database
        return (
            f'REFERENCES {database.quote_identifier(target._table)} '
            f'({database.quote_identifier("id")}) ON DELETE '
            f'{self.ondelete}')


def _not_bool(field, value):
    # bool is a subclass of int, which would let True pass for 1.
    if isinstance(value, bool):
        raise ModelError(
            f'The field {field.name!r} holds numbers, not bool {value!r}.')
    return value
