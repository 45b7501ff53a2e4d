"""Database backends: SQLite (the embedded default) and PostgreSQL.

The backend is chosen by the scheme of ``[database] uri``.  Every backend
offers the interface of :class:`.base.Database` and says what it can do
through its ``has_*`` attributes, so that callers probe abilities instead
of testing names.
"""
import threading
import urllib.parse

from ..config import config
from ..exceptions import ConfigError

__all__ = ['name', 'Database', 'database_class', 'forget_databases']

BACKENDS = {
    'sqlite': 'trytond_queue.backend.sqlite',
    'postgresql': 'trytond_queue.backend.postgresql',
}

_databases = {}
_lock = threading.Lock()


def name() -> str:
    """Return the name of the configured backend."""
    uri = config.get('database', 'uri') or 'sqlite://'
    scheme = urllib.parse.urlsplit(uri).scheme
    if scheme in ('postgres', 'postgresql'):
        return 'postgresql'
    if scheme not in BACKENDS:
        known = ', '.join(f'{b}://' for b in BACKENDS)
        raise ConfigError(
            f'The option [database] uri = {uri!r} names the unknown '
            f'backend {scheme!r}: use one of {known} '
            f'(read from {config.origin("database", "uri")}).')
    return scheme


def database_class():
    """Return the Database class of the configured backend."""
    module_name = BACKENDS[name()]
    if name() == 'postgresql':
        try:
            import psycopg2  # noqa: F401
        except ImportError as exception:
            raise ConfigError(
                'The PostgreSQL backend needs psycopg2: run '
                '"pip install trytond_queue[postgresql]".') from exception
    module = __import__(module_name, fromlist=['Database'])
    return module.Database


def Database(database_name: str):  # noqa: N802 -- reads like Tryton's
    """Return the shared Database object of that name for the current URI.

    The object keeps the connection pool, so it is created once per
    process and per URI.
    """
    uri = config.get('database', 'uri')
    key = (uri, config.get('database', 'path'), database_name)
    database = _databases.get(key)
    if database is None:
        with _lock:
            database = _databases.get(key)
            if database is None:
                database = database_class()(database_name)
                _databases[key] = database
    return database


def forget_databases(database_name: str | None = None):
    """Close the pools of the databases (all, or those of one name)."""
    with _lock:
        for key, database in list(_databases.items()):
            if database_name is None or key[2] == database_name:
                database.close()
                del _databases[key]
