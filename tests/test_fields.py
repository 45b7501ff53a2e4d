"""Fields: each type goes through both backends and refuses bad values."""
import datetime
import decimal

import pytest

from trytond_queue.exceptions import ModelError
from trytond_queue.model import Model, fields
from trytond_queue.pool import Pool

VALUES = [
    ('char', 'héllo "quoted" \'too\''),
    ('text', 'line one\nline two\n' + 'x' * 5000),
    ('integer', -2 ** 31),
    ('integer', 2 ** 31 - 1),
    ('float', 3.141592653589793),
    ('float', -1e-300),
    ('numeric', decimal.Decimal('12345.678901')),
    ('numeric', decimal.Decimal('-0.5')),
    ('boolean', True),
    ('boolean', False),
    ('date', datetime.date(2024, 2, 29)),
    ('datetime', datetime.datetime(2024, 2, 29, 23, 59, 58)),
    ('timestamp', datetime.datetime(2024, 2, 29, 23, 59, 58, 123456)),
    ('dict', {
        'amount': decimal.Decimal('1.50'),
        'when': datetime.datetime(2024, 1, 2, 3, 4, 5, 6),
        'day': datetime.date(2024, 1, 2),
        'at': datetime.time(12, 30),
        'delay': datetime.timedelta(days=1, seconds=2),
        'raw': b'\x00\xff',
        'nested': {'list': [1, 'two', None, True, 2.5]},
        }),
    ('dict', {}),
    ]


def create(values):
    Everything = Pool().get('test.everything')
    record, = Everything.create([values])
    return record.id


@pytest.mark.parametrize('name, value', VALUES, ids=lambda v: repr(v)[:30])
def test_value_comes_back_with_its_type(env, name, value):
    with env.transaction():
        id_ = create({name: value})
    with env.transaction():
        Everything = Pool().get('test.everything')
        read_value = getattr(Everything(id_), name)
        values, = Everything.read([id_], [name])
    assert read_value == value
    assert type(read_value) is type(value)
    assert values == {'id': id_, name: value}


@pytest.mark.parametrize('name', [
    'char', 'text', 'integer', 'float', 'numeric', 'date', 'datetime',
    'timestamp', 'dict', 'party'])
def test_none_comes_back_as_none(env, name):
    with env.transaction():
        id_ = create({name: None})
        empty_id = create({})
    with env.transaction():
        Everything = Pool().get('test.everything')
        assert getattr(Everything(id_), name) is None
        assert getattr(Everything(empty_id), name) is None


def test_boolean_none_is_false(env):
    with env.transaction():
        id_ = create({'boolean': None})
        empty_id = create({})
    with env.transaction():
        Everything = Pool().get('test.everything')
        assert Everything(id_).boolean is False
        assert Everything(empty_id).boolean is False


def test_integer_is_stored_as_float_and_decimal(env):
    with env.transaction():
        id_ = create({'float': 2, 'numeric': 3})
    with env.transaction():
        record = Pool().get('test.everything')(id_)
        assert (record.float, type(record.float)) == (2.0, float)
        assert record.numeric == decimal.Decimal(3)
        assert type(record.numeric) is decimal.Decimal


def test_datetime_drops_microseconds_and_timestamp_keeps_them(env):
    moment = datetime.datetime(2024, 5, 6, 7, 8, 9, 654321)
    with env.transaction():
        id_ = create({'datetime': moment, 'timestamp': moment})
    with env.transaction():
        record = Pool().get('test.everything')(id_)
        assert record.datetime == moment.replace(microsecond=0)
        assert record.timestamp == moment


def test_aware_datetime_is_stored_as_naive_utc(env):
    paris = datetime.timezone(datetime.timedelta(hours=2))
    moment = datetime.datetime(2024, 5, 6, 9, 0, tzinfo=paris)
    with env.transaction():
        id_ = create({'timestamp': moment})
    with env.transaction():
        record = Pool().get('test.everything')(id_)
        assert record.timestamp == datetime.datetime(2024, 5, 6, 7, 0)


def test_many2one_takes_a_record_or_an_id_and_gives_a_record(env):
    with env.transaction():
        Party = Pool().get('test.party')
        alice, bob = Party.create([{'name': 'alice'}, {'name': 'bob'}])
        by_record = create({'party': alice})
        by_id = create({'party': bob.id})
    with env.transaction():
        Everything = Pool().get('test.everything')
        first, second = Everything.browse([by_record, by_id])
        assert first.party == alice and second.party == bob
        assert first.party.name == 'alice'
        assert isinstance(first.party, Pool().get('test.party'))
        assert Everything.read([by_id], ['party']) == [
            {'id': by_id, 'party': bob.id}]


def test_many2one_is_set_null_when_the_target_is_deleted(env):
    with env.transaction():
        Party = Pool().get('test.party')
        party, = Party.create([{'name': 'gone'}])
        id_ = create({'party': party})
    with env.transaction():
        Everything = Pool().get('test.everything')
        record = Everything(id_)
        assert record.party == party
        Pool().get('test.party').delete([party])
        # The cache of the transaction forgets what the deletion changed.
        assert Everything(id_).party is None
    with env.transaction():
        assert Pool().get('test.everything')(id_).party is None


def test_many2one_refuses_an_unsaved_record(env):
    with env.transaction():
        Party = Pool().get('test.party')
        with pytest.raises(ModelError, match='saved'):
            create({'party': Party(name='new')})


@pytest.mark.parametrize('name, value, message', [
    ('char', 5, 'str'),
    ('text', b'bytes', 'str'),
    ('integer', '1', 'int'),
    ('integer', 1.0, 'int'),
    ('integer', True, 'bool'),
    ('integer', 2 ** 31, 'integers from'),
    ('float', '1.5', 'float'),
    ('float', False, 'bool'),
    ('float', float('nan'), 'NaN'),
    ('numeric', 1.5, 'Decimal'),
    ('numeric', decimal.Decimal('NaN'), 'NaN'),
    ('boolean', 1, 'bool'),
    ('date', datetime.datetime(2024, 1, 1), 'datetime'),
    ('date', '2024-01-01', 'date'),
    ('datetime', datetime.date(2024, 1, 1), 'datetime'),
    ('timestamp', '2024-01-01 00:00', 'datetime'),
    ('dict', ['a'], 'dict'),
    ('dict', {1: 'one'}, 'keys must be strings'),
    ('dict', {'s': {1, 2}}, 'set'),
    ('party', 'alice', 'test.party'),
    ('party', -1, 'test.party'),
    ('party', True, 'test.party'),
    ], ids=repr)
def test_bad_value_is_refused_naming_the_field(env, name, value, message):
    with env.transaction():
        Everything = Pool().get('test.everything')
        with pytest.raises(ModelError) as info:
            Everything(**{name: value})
        assert f"'{name}'" in info.value.message
        assert message in info.value.message
        with pytest.raises(ModelError):
            Everything.create([{name: value}])
        record, = Everything.create([{}])
        with pytest.raises(ModelError):
            Everything.write([record], {name: value})


def test_char_size_is_enforced():
    class Sized(Model):
        __name__ = 'test.sized'
        code = fields.Char(size=3)

    assert Sized(code='abc').code == 'abc'
    with pytest.raises(ModelError, match="'code' holds at most 3"):
        Sized(code='abcd')


def test_field_string_defaults_to_its_name():
    class Named(Model):
        __name__ = 'test.named'
        due_date = fields.Date()

    assert Named.due_date.string == 'Due date'
    assert repr(Named.due_date) == '<Date due_date>'


def test_many2one_refuses_an_unknown_ondelete():
    with pytest.raises(ModelError, match='CASCADE'):
        fields.Many2One('test.party', ondelete='IGNORE')


def test_required_field_is_checked_at_create_and_write(env):
    with env.transaction():
        Party = Pool().get('test.party')
        with pytest.raises(ModelError, match="'name' of 'test.party'"):
            Party.create([{}])
        party, = Party.create([{'name': 'named'}])
        with pytest.raises(ModelError, match='required'):
            Party.write([party], {'name': None})


def test_unknown_field_is_refused(env):
    with env.transaction():
        Party = Pool().get('test.party')
        with pytest.raises(ModelError, match="no field 'nickname'"):
            Party.create([{'name': 'x', 'nickname': 'y'}])
