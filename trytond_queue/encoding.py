"""JSON with types: the storage format of task arguments and Dict fields.

Decimal, datetime, date, time, timedelta and bytes are written as objects
that name their class (``{"__class__": "Decimal", "decimal": "1.50"}``)
and come back as the same type.  Anything else that JSON cannot hold is
refused with :class:`ArgumentEncodingError`, and so are NaN and the
infinities.  Dictionary keys must be strings, JSON would silently turn
other keys into strings, and the key ``__class__`` is reserved for the
typed values.
"""
import base64
import datetime
import decimal
import json

from .exceptions import ArgumentEncodingError

__all__ = ['dumps', 'loads', 'check']


def _encode(value):
    # Called by json for the values it cannot write itself.  datetime is
    # tested before date because it is a subclass of it.
    if isinstance(value, decimal.Decimal):
        if not value.is_finite():
            # JSON has no NaN nor infinity, and float ones are refused.
            raise ValueError(f'{value!r} is not a finite number')
        return {'__class__': 'Decimal', 'decimal': str(value)}
    if isinstance(value, datetime.datetime):
        return {'__class__': 'datetime', 'iso': value.isoformat()}
    if isinstance(value, datetime.date):
        return {'__class__': 'date', 'iso': value.isoformat()}
    if isinstance(value, datetime.time):
        return {'__class__': 'time', 'iso': value.isoformat()}
    if isinstance(value, datetime.timedelta):
        return {
            '__class__': 'timedelta',
            'days': value.days,
            'seconds': value.seconds,
            'microseconds': value.microseconds,
            }
    if isinstance(value, (bytes, bytearray, memoryview)):
        return {
            '__class__': 'bytes',
            'base64': base64.b64encode(bytes(value)).decode('ascii'),
            }
    raise TypeError(
        f'{type(value).__name__} {value!r:.80} cannot be stored as JSON')


_DECODERS = {
    'Decimal': lambda o: decimal.Decimal(o['decimal']),
    'datetime': lambda o: datetime.datetime.fromisoformat(o['iso']),
    'date': lambda o: datetime.date.fromisoformat(o['iso']),
    'time': lambda o: datetime.time.fromisoformat(o['iso']),
    'timedelta': lambda o: datetime.timedelta(
        days=o['days'], seconds=o['seconds'],
        microseconds=o['microseconds']),
    'bytes': lambda o: base64.b64decode(o['base64']),
}


def _decode(obj):
    decoder = _DECODERS.get(obj.get('__class__'))
    if decoder is None:
        return obj
    return decoder(obj)


_encoder = json.JSONEncoder(
    default=_encode, allow_nan=False, separators=(',', ':'),
    ensure_ascii=False)
_decoder = json.JSONDecoder(object_hook=_decode)


_NO_KEY = object()
SCALAR_TYPES = frozenset([str, int, float, bool, type(None)])
_KEY_RULE = 'keys must be strings other than "__class__"'


def dumps(value) -> str:
    """Return value as typed JSON, or raise ArgumentEncodingError."""
    text = encode(value)
    # The walk comes after the encoding, which has refused cycles.
    check_keys(value)
    return text


def encode(value) -> str:
    """Return value as typed JSON without checking dictionary keys.

    For callers that check the keys of the parts they did not build
    with :func:`check_keys`; others use :func:`dumps`.
    """
    try:
        return _encoder.encode(value)
    except (TypeError, ValueError) as exception:
        raise ArgumentEncodingError(str(exception)) from exception


def check_keys(value):
    """Raise ArgumentEncodingError if a dictionary key would not last."""
    if type(value) in SCALAR_TYPES:
        return
    key = _bad_key(value)
    if key is not _NO_KEY:
        raise ArgumentEncodingError(
            f'the dictionary key {key!r} cannot be stored as JSON: '
            f'{_KEY_RULE}')


def _bad_key(value):
    # JSON turns the keys 1, 1.0, True and None into strings without a
    # word, and a "__class__" key would read back as a typed value.
    stack = [value]
    while stack:
        value = stack.pop()
        if isinstance(value, dict):
            for key in value:
                if not isinstance(key, str) or key == '__class__':
                    return key
            items = value.values()
        elif isinstance(value, (list, tuple)):
            items = value
        else:
            continue
        # Long lists of ids are common: their types are gathered in C.
        if not SCALAR_TYPES.issuperset(map(type, items)):
            stack.extend(items)
    return _NO_KEY


def loads(text: str):
    """Return the value of typed JSON text."""
    return _decoder.decode(text)


def check(name: str, value):
    """Raise ArgumentEncodingError naming the argument if value is refused.

    It walks the value, so it is meant for error messages, not for every
    call: :func:`dumps` already refuses what JSON cannot hold.
    """
    _check(name, value, ())


def _check(name, value, containers):
    if isinstance(value, (dict, list, tuple)):
        if id(value) in containers:
            raise ArgumentEncodingError(
                f'The argument {name} contains itself: JSON cannot hold '
                'a circular reference.')
        containers += (id(value),)
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str) or key == '__class__':
                raise ArgumentEncodingError(
                    f'The argument {name} has the key {key!r}: '
                    f'{_KEY_RULE}.')
            _check(f'{name}[{key!r}]', item, containers)
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            _check(f'{name}[{index}]', item, containers)
    else:
        try:
            dumps(value)
        except ArgumentEncodingError as exception:
            raise ArgumentEncodingError(
                f'The argument {name} cannot be stored as JSON: '
                f'{exception.message}. Pass ids, numbers, strings, '
                'lists, dictionaries or the types of '
                'trytond_queue.encoding.') from None
