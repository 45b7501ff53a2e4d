"""Typed JSON: what goes in comes back with its type, the rest is refused."""
import datetime
import decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trytond_queue import encoding
from trytond_queue.exceptions import ArgumentEncodingError, TrytondQueueError

UTC = datetime.timezone.utc
PARIS_SUMMER = datetime.timezone(datetime.timedelta(hours=2))

scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
    | st.decimals(allow_nan=False, allow_infinity=False)
    | st.datetimes(timezones=st.sampled_from([None, UTC, PARIS_SUMMER]))
    | st.dates()
    | st.times()
    | st.timedeltas()
    | st.binary())
keys = st.text().filter(lambda key: key != '__class__')
values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=5)
        | st.dictionaries(keys, children, max_size=5)),
    max_leaves=20)


def same(left, right):
    """Tell whether two values are equal and of the same types throughout."""
    if type(left) is not type(right):
        return False
    if isinstance(left, dict):
        return (left.keys() == right.keys()
            and all(same(left[k], right[k]) for k in left))
    if isinstance(left, list):
        return (len(left) == len(right)
            and all(same(a, b) for a, b in zip(left, right)))
    if isinstance(left, (datetime.datetime, datetime.time)):
        return left == right and left.utcoffset() == right.utcoffset()
    if isinstance(left, decimal.Decimal):
        return left.as_tuple() == right.as_tuple()
    return left == right


@settings(max_examples=300, deadline=None)
@given(values)
def test_dumps_then_loads_gives_back_the_value_and_its_types(value):
    assert same(encoding.loads(encoding.dumps(value)), value)


def test_tuples_come_back_as_lists():
    assert encoding.loads(encoding.dumps((1, (2, 3)))) == [1, [2, 3]]


def test_bytearray_and_memoryview_come_back_as_bytes():
    text = encoding.dumps([bytearray(b'ab'), memoryview(b'cd')])
    assert encoding.loads(text) == [b'ab', b'cd']


def test_typed_values_name_their_class_in_the_text():
    text = encoding.dumps(decimal.Decimal('1.50'))
    assert text == '{"__class__":"Decimal","decimal":"1.50"}'


@pytest.mark.parametrize('value', [
    {1, 2},
    frozenset(),
    object(),
    float('nan'),
    float('inf'),
    decimal.Decimal('NaN'),
    decimal.Decimal('-Infinity'),
    {1: 'one'},
    {None: 'none'},
    {'nested': [{True: 'yes'}]},
    {'__class__': 'Decimal', 'decimal': '1'},
    ], ids=repr)
def test_dumps_refuses_what_would_not_come_back(value):
    with pytest.raises(ArgumentEncodingError):
        encoding.dumps(value)


def test_refusal_is_a_type_error_and_a_trytond_queue_error():
    with pytest.raises(TypeError) as info:
        encoding.dumps({1, 2})
    assert isinstance(info.value, TrytondQueueError)
    assert 'set' in info.value.message


def test_dumps_refuses_a_circular_reference():
    value = []
    value.append(value)
    with pytest.raises(ArgumentEncodingError, match='[Cc]ircular'):
        encoding.dumps(value)


@pytest.mark.parametrize('value, path', [
    ({'a': [1, {2}]}, "arg['a'][1]"),
    ([1, 2, object()], 'arg[2]'),
    ({'a': {'b': float('nan')}}, "arg['a']['b']"),
    ({'a': {3: 'x'}}, "arg['a']"),
    ], ids=repr)
def test_check_names_the_path_of_the_culprit(value, path):
    with pytest.raises(ArgumentEncodingError) as info:
        encoding.check('arg', value)
    assert f'The argument {path} ' in info.value.message


def test_check_names_the_refused_key():
    with pytest.raises(ArgumentEncodingError, match="'__class__'"):
        encoding.check('kwarg', {'x': {'__class__': 'date'}})


def test_check_stops_at_a_circular_reference():
    value = {'a': []}
    value['a'].append(value)
    with pytest.raises(ArgumentEncodingError, match=r"arg\['a'\]\[0\]"):
        encoding.check('arg', value)


def test_check_accepts_what_dumps_accepts():
    value = {'when': datetime.date(2024, 2, 29), 'ids': [1, 2, 3]}
    encoding.check('arg', value)
    assert encoding.loads(encoding.dumps(value)) == value
