"""Fixtures that run every test on SQLite and on PostgreSQL.

Each backend gets one database for the session, created here and
dropped at the end; each test starts from empty tables.  Without a
PostgreSQL server the PostgreSQL cases are skipped with the reason,
unless TRYTOND_QUEUE_REQUIRE_POSTGRESQL is set (as in CI), where they
fail instead.
"""
import os
import sys
import uuid

import pytest

from trytond_queue import backend
from trytond_queue.config import config
from trytond_queue.pool import Pool
from trytond_queue.transaction import Transaction

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
POSTGRESQL_URI = os.environ.get(
    'TRYTOND_QUEUE_TEST_POSTGRESQL', 'postgresql://postgres@127.0.0.1:5432/')
BACKENDS = ['sqlite', 'postgresql']


def postgresql_problem():
    """Return why PostgreSQL cannot be used, or None if it can."""
    try:
        import psycopg2
    except ImportError:
        return 'psycopg2 is not installed'
    try:
        psycopg2.connect(POSTGRESQL_URI, dbname='postgres',
            connect_timeout=3).close()
    except psycopg2.OperationalError as exception:
        return f'no PostgreSQL server at {POSTGRESQL_URI}: {exception}'
    return None


class Environment:
    """A backend with its database, for one test."""

    def __init__(self, name, uri, path, database_name):
        self.name = name
        self.uri = uri
        self.path = path
        self.database_name = database_name

    def configure(self):
        """Point the global configuration at this backend."""
        config.reset()
        config.set('database', 'uri', self.uri)
        config.set('database', 'path', self.path)
        config.set('pool', 'modules', 'tests.models')
        config.set('queue', 'retry_delay', '0.05')

    def config_file(self, directory, **options):
        """Write a configuration file for subprocesses; return its path."""
        values = {
            'database': {'uri': self.uri, 'path': self.path},
            'pool': {'modules': 'tests.models'},
            'queue': {'worker': 'True', 'retry_delay': '0.05'},
            }
        for key, value in options.items():
            section, option = key.split('__')
            values.setdefault(section, {})[option] = str(value)
        path = os.path.join(str(directory), 'trytond.conf')
        with open(path, 'w') as fp:
            for section, items in values.items():
                fp.write(f'[{section}]\n')
                for option, value in items.items():
                    fp.write(f'{option} = {value}\n')
        return path

    def subprocess_env(self):
        """The environment of a subprocess that imports the tests."""
        env = dict(os.environ)
        env['PYTHONPATH'] = os.pathsep.join(
            filter(None, [ROOT, env.get('PYTHONPATH')]))
        env.pop('TRYTOND_CONFIG', None)
        return env

    def transaction(self, user=0, context=None, readonly=False):
        """Start a transaction on the test database."""
        return Transaction().start(
            self.database_name, user, context=context, readonly=readonly)

    def pool(self):
        """Return the pool of the test database."""
        return Pool(self.database_name)


@pytest.fixture(scope='session')
def session_databases(tmp_path_factory):
    created = {}
    yield created
    for environment in created.values():
        environment.configure()
        backend.Database(environment.database_name).drop()
        backend.forget_databases()


def _environment(name, session_databases, tmp_path_factory):
    if name not in session_databases:
        if name == 'postgresql':
            problem = postgresql_problem()
            if problem:
                if os.environ.get('TRYTOND_QUEUE_REQUIRE_POSTGRESQL'):
                    pytest.fail(f'PostgreSQL is required: {problem}')
                pytest.skip(f'PostgreSQL tests skipped: {problem}')
            uri = POSTGRESQL_URI
        else:
            uri = 'sqlite://'
        path = str(tmp_path_factory.mktemp('databases'))
        database_name = f'trytond_queue_test_{uuid.uuid4().hex[:8]}'
        environment = Environment(name, uri, path, database_name)
        environment.configure()
        if name == 'postgresql':
            backend.Database(database_name).create()
        Pool(database_name).init()
        session_databases[name] = environment
    environment = session_databases[name]
    environment.configure()
    pool = Pool(environment.database_name).init(update=False)
    _empty_tables(environment, pool)
    return environment


def _leave():
    while Transaction().started:
        Transaction().stop()
    config.reset()


@pytest.fixture(params=BACKENDS)
def env(request, session_databases, tmp_path_factory):
    """The backend of the test, with an initialised, empty database."""
    yield _environment(request.param, session_databases, tmp_path_factory)
    _leave()


@pytest.fixture(params=['postgresql'])
def pg_env(request, session_databases, tmp_path_factory):
    """PostgreSQL only, for what SQLite cannot do."""
    yield _environment(request.param, session_databases, tmp_path_factory)
    _leave()


def _empty_tables(environment, pool):
    from trytond_queue.model import ModelSQL
    with environment.transaction() as transaction:
        cursor = transaction.connection.cursor()
        for _, model in pool.iterobject():
            if issubclass(model, ModelSQL):
                table = model.__table__()
                cursor.execute(*table.delete())


def pytest_report_header(config):
    problem = postgresql_problem()
    return [
        f'python: {sys.version.split()[0]}',
        'postgresql: ' + (problem or f'available at {POSTGRESQL_URI}'),
        ]
