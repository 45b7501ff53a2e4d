"""The pool: registration, composition, initialisation and its errors."""
import os
import sys
import types
import uuid

import pytest

from trytond_queue import backend
from trytond_queue.config import config
from trytond_queue.exceptions import (
    ConfigError,
    DatabaseNotFound,
    DatabaseNotInitialised,
    ModelError,
)
from trytond_queue.model import ModelSQL, fields
from trytond_queue.pool import Pool, PoolMeta
from trytond_queue.transaction import Transaction


@pytest.fixture
def other_database(env):
    """The name of a database apart from the test's, dropped at the end.

    It does not exist yet: the test creates it or not.
    """
    name = f'trytond_queue_pool_{uuid.uuid4().hex[:10]}'
    yield name
    Pool.forget(name)
    database = backend.Database(name)
    if database.exists():
        database.drop()
    backend.forget_databases(name)


def fake_module(*classes):
    """Return the name of a new importable module registering classes."""
    name = f'tests_pool_module_{uuid.uuid4().hex[:10]}'
    module = types.ModuleType(name)
    module.register = lambda: Pool.register(*classes, module=name)
    sys.modules[name] = module
    return name


def add_modules(*names):
    config.set('pool', 'modules', ', '.join(
        config.getlist('pool', 'modules') + list(names)))


def test_register_and_init_twice_are_harmless(env):
    from tests.models import Party
    Pool.register(Party, module='tests.models')
    pool = env.pool().init()
    with env.transaction():
        pool.get('test.party').create([{'name': 'kept'}])
    Pool.register(Party, module='tests.models')
    assert env.pool().init() is pool
    assert pool.init(update=False) is pool
    with env.transaction():
        Composed = Pool().get('test.party')
        assert Composed.__bases__ == (Party,)
        assert [p.name for p in Composed.search([])] == ['kept']


def test_classes_of_one_name_from_two_modules_are_composed(
        env, other_database):
    class Base(ModelSQL):
        __name__ = 'test.composed'
        name = fields.Char()

        def describe(self):
            return f'base {self.name}'

    class Extension(metaclass=PoolMeta):
        __name__ = 'test.composed'
        size = fields.Integer()

        def describe(self):
            return f'{super().describe()} of size {self.size}'

    add_modules(fake_module(Base), fake_module(Extension))
    if env.name == 'postgresql':
        backend.Database(other_database).create()
    Pool(other_database).init()
    with Transaction().start(other_database, 0):
        Composed = Pool().get('test.composed')
        assert Composed.__mro__[1:3] == (Extension, Base)
        assert set(Composed._fields) == {'name', 'size'}
        record, = Composed.create([{'name': 'box', 'size': 3}])
        assert record.describe() == 'base box of size 3'


def test_a_later_module_adds_its_columns_at_the_next_init(
        env, other_database):
    class Base(ModelSQL):
        __name__ = 'test.grown'
        name = fields.Char()

    class Extension(ModelSQL):
        __name__ = 'test.grown'
        size = fields.Integer()

    add_modules(fake_module(Base))
    if env.name == 'postgresql':
        backend.Database(other_database).create()
    Pool(other_database).init()
    with Transaction().start(other_database, 0):
        Pool().get('test.grown').create([{'name': 'old'}])
    add_modules(fake_module(Extension))
    Pool(other_database).init()
    with Transaction().start(other_database, 0):
        Grown = Pool().get('test.grown')
        Grown.create([{'name': 'new', 'size': 2}])
        assert [(r.name, r.size) for r in Grown.search([])] == [
            ('old', None), ('new', 2)]


def test_registering_a_class_that_is_not_a_model_is_refused():
    class Plain:
        __name__ = 'test.plain'

    with pytest.raises(ModelError, match='PoolMeta'):
        Pool.register(Plain, module='tests_pool_plain')


def test_get_of_an_unknown_model_says_how_to_register_it(env):
    with env.transaction():
        with pytest.raises(ModelError) as info:
            Pool().get('test.unknown')
    assert "'test.unknown'" in info.value.message
    assert '[pool] modules' in info.value.message


def test_pool_without_a_name_needs_a_transaction(env):
    with pytest.raises(ModelError, match='transaction'):
        Pool()


def test_get_before_init_says_to_call_init(env, other_database):
    with pytest.raises(ModelError, match=r'\.init\(\)'):
        Pool(other_database).get('ir.queue')


def test_every_model_is_iterated(env):
    names = {name for name, _ in env.pool().iterobject()}
    assert {'ir.queue', 'ir.queue.worker', 'test.party', 'my_model'} <= (
        names)


def test_an_unimportable_module_is_a_config_error_naming_it(env):
    add_modules('tests_no_such_module')
    with pytest.raises(ConfigError, match="'tests_no_such_module'"):
        env.pool().init(update=False)


@pytest.mark.parametrize('env', ['postgresql'], indirect=True)
def test_init_of_a_missing_postgresql_database_is_refused(
        env, other_database):
    pool = Pool(other_database)
    with pytest.raises(DatabaseNotFound) as info:
        pool.init()
    assert other_database in info.value.message
    assert f'trytond-queue init -d {other_database}' in info.value.message
    with pytest.raises(ModelError, match='not initialised'):
        pool.get('ir.queue')


@pytest.mark.parametrize('env', ['sqlite'], indirect=True)
def test_init_creates_the_missing_sqlite_database(env, other_database):
    database = backend.Database(other_database)
    Pool(other_database).init()
    assert os.path.isfile(database.path)
    with Transaction().start(other_database, 0):
        assert Pool().get('ir.queue').search([]) == []


@pytest.mark.parametrize('env', ['sqlite'], indirect=True)
def test_check_of_a_missing_sqlite_database_does_not_create_it(
        env, other_database):
    with pytest.raises(DatabaseNotFound):
        Pool(other_database).init(update=False)
    assert not backend.Database(other_database).exists()


def test_check_of_an_uninitialised_database_is_refused(
        env, other_database):
    backend.Database(other_database).create()
    with pytest.raises(DatabaseNotInitialised) as info:
        Pool(other_database).init(update=False)
    assert f'trytond-queue init -d {other_database}' in info.value.message
    Pool(other_database).init()
    assert Pool(other_database).init(update=False).get('ir.queue')


def test_init_without_update_refuses_a_table_missing_columns(env):
    with env.transaction() as transaction:
        transaction.connection.cursor().execute(
            'ALTER TABLE test_log DROP COLUMN ended')
    with pytest.raises(DatabaseNotInitialised, match='lacks the columns '
            'ended, added since it was created: run "trytond-queue init'):
        Pool(env.database_name).init(update=False)
    Pool(env.database_name).init()
    Pool(env.database_name).init(update=False)
