"""The backends: databases, connections, schema and errors, on both."""
import uuid

import pytest
from sql import Table

from trytond_queue import backend
from trytond_queue.exceptions import DatabaseNotFound

ABILITIES = {
    'sqlite': {
        'has_select_for_skip_locked': False,
        'has_channel': False,
        'has_advisory_lock': False,
        'has_sequence': False,
        },
    'postgresql': {
        'has_returning': True,
        'has_select_for_skip_locked': True,
        'has_channel': True,
        'has_advisory_lock': True,
        'has_sequence': True,
        'has_on_conflict': True,
        },
    }


def unique_name(prefix):
    return f'{prefix}_{uuid.uuid4().hex[:10]}'


def test_the_uri_chooses_the_backend(env):
    assert backend.name() == env.name
    database = backend.Database(env.database_name)
    assert database.__module__ == f'trytond_queue.backend.{env.name}'
    assert repr(database) == f"<Database '{env.database_name}'>"


def test_abilities_are_those_of_the_backend(env):
    database = backend.Database(env.database_name)
    for ability, value in ABILITIES[env.name].items():
        assert getattr(database, ability) is value, ability


def test_database_objects_are_shared_per_name(env):
    first = backend.Database(env.database_name)
    assert backend.Database(env.database_name) is first
    assert backend.Database(unique_name('other')) is not first


def test_a_database_is_created_and_dropped(env):
    name = unique_name('trytond_queue_scratch')
    database = backend.Database(name)
    try:
        assert not database.exists()
        database.create()
        assert database.exists()
        connection = database.get_connection()
        cursor = connection.cursor()
        cursor.execute('SELECT 1')
        assert cursor.fetchone()[0] == 1
        database.put_connection(connection)
    finally:
        database.drop()
        backend.forget_databases(name)
    assert not database.exists()


def test_a_missing_database_gives_database_not_found(env):
    name = unique_name('trytond_queue_missing')
    try:
        with pytest.raises(DatabaseNotFound) as info:
            backend.Database(name).get_connection()
        assert name in info.value.message
        assert 'trytond-queue init' in info.value.message
    finally:
        backend.forget_databases(name)


def test_a_readonly_connection_refuses_writes(env):
    database = backend.Database(env.database_name)
    connection = database.get_connection(readonly=True)
    try:
        cursor = connection.cursor()
        table = Table('test_party')
        with pytest.raises(Exception) as info:
            cursor.execute(*database._flavored(
                table.insert([table.name], [['refused']])))
        assert 'read' in str(info.value).lower()
    finally:
        database.put_connection(connection)
    # The next connection of the pool is writable again.
    with env.transaction() as transaction:
        Party = env.pool().get('test.party')
        Party.create([{'name': 'accepted'}])
        assert not transaction.readonly


def test_an_autocommit_connection_keeps_each_statement(env):
    database = backend.Database(env.database_name)
    table = Table('test_party')
    connection = database.get_connection(autocommit=True)
    try:
        cursor = connection.cursor()
        cursor.execute(*database._flavored(
            table.insert([table.name], [['kept']])))
    finally:
        database.put_connection(connection)
    with env.transaction():
        Party = env.pool().get('test.party')
        assert [p.name for p in Party.search([])] == ['kept']


@pytest.fixture
def scratch(env):
    """A database, a connection in a transaction and a table name."""
    database = backend.Database(env.database_name)
    connection = database.get_connection()
    yield database, connection, unique_name('scratch')
    database.put_connection(connection)


def test_tables_columns_and_indexes_are_created(scratch):
    database, connection, name = scratch
    assert not database.table_exists(connection, name)
    database.create_table(connection, name, [
        ('label', database.sql_type('char'), ''),
        ('code', database.sql_type('integer'), 'NOT NULL'),
        ])
    assert database.table_exists(connection, name)
    assert database.columns(connection, name) == {'id', 'label', 'code'}
    database.add_column(
        connection, name, 'amount', database.sql_type('numeric'))
    assert database.columns(connection, name) == {
        'id', 'label', 'code', 'amount'}
    table = Table(name)
    database.create_index(
        connection, name, f'{name}_code', ['code DESC'], unique=True,
        where=table.label != 'free')
    # Created once: a second call is harmless.
    database.create_index(
        connection, name, f'{name}_code', ['code DESC'], unique=True,
        where=table.label != 'free')
    cursor = connection.cursor()
    insert = table.insert([table.label, table.code], [['a', 1]])
    cursor.execute(*database._flavored(insert))
    with pytest.raises(Exception) as info:
        cursor.execute(*database._flavored(insert))
    assert database.is_integrity_error(info.value)
    assert not database.is_serialization_failure(info.value)
    assert not database.is_connection_error(info.value)


def test_an_index_column_with_a_bad_direction_is_refused(scratch):
    database, connection, name = scratch
    database.create_table(connection, name, [('code', 'INTEGER', '')])
    with pytest.raises(ValueError, match='code SIDEWAYS'):
        database.create_index(
            connection, name, f'{name}_code', ['code SIDEWAYS'])


def test_identifiers_are_quoted_and_nul_refused(env):
    database = backend.Database(env.database_name)
    assert database.quote_identifier('a"b') == '"a""b"'
    assert database.quote_identifier('état') == '"état"'
    with pytest.raises(ValueError):
        database.quote_identifier('a\0b')


@pytest.mark.parametrize('value, text', [
    (None, 'NULL'),
    (True, 'TRUE'),
    (7, '7'),
    ("it's", "'it''s'"),
    ('été', "'été'"),
    ])
def test_literals_are_quoted_for_definitions(env, value, text):
    database = backend.Database(env.database_name)
    assert database.literal(value).upper() == text.upper()


def test_render_inline_puts_constants_in_a_condition(env):
    database = backend.Database(env.database_name)
    table = Table('t')
    condition = (table.state == "it's") & (table.size > 3)
    assert database.render_inline(condition) == (
        '("state" = \'it\'\'s\') AND ("size" > 3)')


def test_literal_refuses_unknown_types(env):
    database = backend.Database(env.database_name)
    with pytest.raises(TypeError):
        database.literal(object())


@pytest.mark.parametrize('env', ['postgresql'], indirect=True)
def test_next_ids_reserves_distinct_ids_from_the_sequence(env):
    database = backend.Database(env.database_name)
    connection = database.get_connection()
    try:
        ids = database.next_ids(connection, Table('test_party'), 3)
        more = database.next_ids(connection, Table('test_party'), 2)
    finally:
        database.put_connection(connection)
    assert len(set(ids + more)) == 5
    assert ids == sorted(ids) and min(more) > max(ids)


@pytest.mark.parametrize('env', ['sqlite'], indirect=True)
def test_sqlite_database_is_a_file_in_the_path(env):
    database = backend.Database(env.database_name)
    assert database.path.startswith(env.path)
    assert database.path.endswith(f'{env.database_name}.sqlite')
    assert database.exists()


def test_flavored_renders_with_the_backend_paramstyle(env):
    database = backend.Database(env.database_name)
    table = Table('t')
    text, params = database._flavored(table.select(where=table.a == 1))
    placeholder = '?' if env.name == 'sqlite' else '%s'
    assert text == f'SELECT * FROM "t" AS "a" WHERE "a"."a" = {placeholder}'
    assert params == (1,)
