"""ModelSQL: create, read, write, delete, search and records."""
import sys
import types
import uuid

import pytest

from trytond_queue.config import config
from trytond_queue.exceptions import ModelError
from trytond_queue.model import ModelSQL, fields
from trytond_queue.pool import Pool


def make_parties(env, *names):
    with env.transaction():
        Party = Pool().get('test.party')
        return [p.id for p in Party.create([{'name': n} for n in names])]


def names(records):
    return [r.name for r in records]


def test_create_returns_records_in_order(env):
    with env.transaction():
        Party = Pool().get('test.party')
        parties = Party.create([{'name': f'p{i}'} for i in range(600)])
        assert Party.create([]) == []
        ids = [p.id for p in parties]
        assert len(set(ids)) == 600 and ids == sorted(ids)
    with env.transaction():
        Party = Pool().get('test.party')
        assert names(Party.browse(ids)) == [f'p{i}' for i in range(600)]


def test_read_returns_dictionaries_in_the_order_asked(env):
    first, second = make_parties(env, 'first', 'second')
    with env.transaction():
        Party = Pool().get('test.party')
        assert Party.read([second, first], ['name']) == [
            {'id': second, 'name': 'second'},
            {'id': first, 'name': 'first'}]
        assert Party.read([first]) == [{'id': first, 'name': 'first'}]
        assert Party.read([first], ['id']) == [{'id': first}]


def test_read_of_missing_records_or_fields_is_refused(env):
    first, = make_parties(env, 'first')
    with env.transaction():
        Party = Pool().get('test.party')
        with pytest.raises(ModelError, match=rf'\[{first + 1}\].*deleted'):
            Party.read([first, first + 1], ['name'])
        with pytest.raises(ModelError, match="no field 'nickname'"):
            Party.read([first], ['nickname'])


def test_write_takes_several_pairs_of_records_and_values(env):
    a, b, c = make_parties(env, 'a', 'b', 'c')
    with env.transaction():
        Party = Pool().get('test.party')
        Party.write([Party(a)], {'name': 'A'}, [b, Party(c)], {'name': 'BC'})
        Party.write([], {'name': 'nobody'})
        with pytest.raises(ModelError, match='pairs'):
            Party.write([Party(a)], {'name': 'x'}, [Party(b)])
    with env.transaction():
        Party = Pool().get('test.party')
        assert names(Party.browse([a, b, c])) == ['A', 'BC', 'BC']


def test_delete_removes_the_records(env):
    a, b, c = make_parties(env, 'a', 'b', 'c')
    with env.transaction():
        Party = Pool().get('test.party')
        Party.delete([Party(a), c])
        Party.delete([])
    with env.transaction():
        Party = Pool().get('test.party')
        assert [p.id for p in Party.search([])] == [b]
        with pytest.raises(ModelError, match='deleted'):
            _ = Party(a).name


def test_save_creates_a_new_record_and_writes_an_existing_one(env):
    with env.transaction():
        Party = Pool().get('test.party')
        party = Party(name='new')
        assert party.id is None
        party.save()
        assert party.id is not None
        assert party.name == 'new'
        other = Party(name='other')
        Party.save([party, other])
        assert other.id is not None
        party_id = party.id
    with env.transaction():
        Party = Pool().get('test.party')
        party = Party(party_id)
        party.name = 'renamed'
        party.save()
    with env.transaction():
        Party = Pool().get('test.party')
        assert names(Party.search([])) == ['renamed', 'other']


def test_records_are_read_lazily_and_together(env):
    ids = make_parties(env, 'a', 'b', 'c')
    with env.transaction() as transaction:
        Party = Pool().get('test.party')
        records = Party.browse(ids)
        assert transaction.cache.get('test.party', {}) == {}
        assert records[1].name == 'b'
        # The first access read the browsed siblings in one query.
        assert set(transaction.cache['test.party']) == set(ids)


def test_write_invalidates_the_cache_of_the_transaction(env):
    a, b = make_parties(env, 'a', 'b')
    with env.transaction() as transaction:
        Party = Pool().get('test.party')
        first, second = Party.browse([a, b])
        assert (first.name, second.name) == ('a', 'b')
        Party.write([first], {'name': 'A'})
        assert (first.name, second.name) == ('A', 'b')
        assert Party(a).name == 'A'
        transaction.commit()
        assert transaction.cache == {}


def test_the_cache_belongs_to_one_transaction(env):
    a, = make_parties(env, 'a')
    with env.transaction():
        Party = Pool().get('test.party')
        record = Party(a)
        assert record.name == 'a'
        with env.transaction(readonly=True) as other:
            assert other.cache == {}
        Party.write([record], {'name': 'A'})
    with env.transaction():
        assert Pool().get('test.party')(a).name == 'A'


def test_search_applies_offset_limit_and_order(env):
    make_parties(env, 'p0', 'p1', 'p2', 'p3', 'p4')
    with env.transaction():
        Party = Pool().get('test.party')
        assert names(Party.search([])) == ['p0', 'p1', 'p2', 'p3', 'p4']
        assert names(Party.search([], order=[('name', 'DESC')])) == [
            'p4', 'p3', 'p2', 'p1', 'p0']
        assert names(Party.search(
            [], offset=1, limit=2, order=[('name', 'DESC')])) == [
                'p3', 'p2']
        assert names(Party.search([], offset=3)) == ['p3', 'p4']
        assert names(Party.search([], limit=0)) == []
        assert names(Party.search(
            [('name', '>', 'p0')], order=[('id', 'desc')], limit=1)) == [
                'p4']
        assert Party.search([], count=True) == 5


def test_order_puts_null_last_ascending_and_first_descending(env):
    with env.transaction():
        Everything = Pool().get('test.everything')
        Everything.create([{'integer': 2}, {}, {'integer': 1}])
        ascending = Everything.search([], order=[('integer', 'ASC')])
        descending = Everything.search([], order=[('integer', 'DESC')])
        assert [r.integer for r in ascending] == [1, 2, None]
        assert [r.integer for r in descending] == [None, 2, 1]
        chosen = Everything.search(
            [], order=[('integer', 'ASC NULLS FIRST')])
        assert [r.integer for r in chosen] == [None, 1, 2]


@pytest.mark.parametrize('kwargs, message', [
    ({'offset': -1}, 'offset must be a positive integer'),
    ({'limit': '10'}, 'limit must be a positive integer'),
    ({'order': [('name', 'UP')]}, "direction 'UP'"),
    ({'order': [('nickname', 'ASC')]}, "no field 'nickname'"),
    ({'order': ['name']}, 'list of (field, direction)'),
    ], ids=repr)
def test_bad_search_arguments_are_refused(env, kwargs, message):
    with env.transaction():
        Party = Pool().get('test.party')
        with pytest.raises(ModelError) as info:
            Party.search([], **kwargs)
        assert message in info.value.message


def test_search_count_counts_the_matches(env):
    make_parties(env, 'a', 'b', 'bb')
    with env.transaction():
        Party = Pool().get('test.party')
        assert Party.search_count([]) == 3
        assert Party.search_count([('name', 'like', 'b%')]) == 2


def test_records_are_equal_and_hash_by_model_and_id(env):
    with env.transaction():
        Party = Pool().get('test.party')
        Everything = Pool().get('test.everything')
        assert Party(1) == Party(1)
        assert hash(Party(1)) == hash(Party('1'))
        assert len({Party(1), Party(1), Party(2)}) == 2
        assert Party(1) != Party(2)
        assert Party(1) != Everything(1)
        assert Party(1) != 1
        new = Party(name='x')
        assert new == new and new != Party(name='x')
        assert sorted([Party(3), Party(1), Party(2)]) == [
            Party(1), Party(2), Party(3)]
        assert int(Party(7)) == 7


def test_repr_names_the_model_and_the_id(env):
    with env.transaction():
        Party = Pool().get('test.party')
        assert repr(Party(5)) == "Pool().get('test.party')(5)"
        assert repr(Party()) == "Pool().get('test.party')(None)"


def test_unset_value_of_a_new_record_is_an_attribute_error(env):
    with env.transaction():
        Party = Pool().get('test.party')
        with pytest.raises(AttributeError, match="'name'"):
            _ = Party().name


class Keywords(ModelSQL):
    """Fields named like the methods of python-sql's Table."""

    __name__ = 'test.keywords'

    select = fields.Char()
    update = fields.Integer()
    alias = fields.Boolean()

    @staticmethod
    def default_update():
        return 7


def test_fields_named_like_table_methods_are_stored(env):
    module = f'tests_modelsql_{uuid.uuid4().hex[:10]}'
    sys.modules[module] = types.ModuleType(module)
    sys.modules[module].register = lambda: Pool.register(
        Keywords, module=module)
    config.set('pool', 'modules', f'tests.models, {module}')
    env.pool().init()
    with env.transaction():
        Model = Pool().get('test.keywords')
        record, = Model.create([{'select': 'chosen', 'alias': True}])
        Model.write([record], {'select': 'changed'})
        assert Model.search([('update', '=', 7)]) == [record]
        assert (record.select, record.update, record.alias) == (
            'changed', 7, True)
        Model.delete([record])
