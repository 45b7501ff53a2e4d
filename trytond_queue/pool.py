"""The pool: the models registered by the modules, per database.

Modules register their classes with :meth:`Pool.register`.  The pool of
a database imports the modules of ``[pool] modules``, composes the
classes registered under one model name by several modules (the later
module's class first in the method resolution order, as in Tryton),
sets them up and creates or updates their tables.
"""
import importlib
import logging
import threading

from . import backend
from .config import config
from .exceptions import (
    ConfigError,
    DatabaseNotFound,
    DatabaseNotInitialised,
    ModelError,
)
from .model.model import ModelMeta
from .transaction import Transaction

__all__ = ['Pool', 'PoolMeta']

logger = logging.getLogger(__name__)

# The modules of the framework itself, registered before the
# application's modules.
CORE_MODULES = ['trytond_queue.queue']


class PoolMeta(ModelMeta):
    """The metaclass of a class that extends a model of another module.

    The class names the model in ``__name__`` and holds only what it
    adds; the pool composes it with the classes of the same name.
    """


class Pool:
    """The models of one database."""

    _registered: dict[str, list[type]] = {}
    _pools: dict[object, 'Pool'] = {}
    _lock = threading.RLock()

    def __new__(cls, database_name: str | None = None):
        if database_name is None:
            transaction = Transaction()
            if not transaction.started:
                raise ModelError(
                    'Pool() without a database name needs a started '
                    'transaction: use Pool(NAME) outside of one.')
            database = transaction.database
        else:
            database = backend.Database(database_name)
        pool = cls._pools.get(database)
        if pool is None:
            with cls._lock:
                pool = cls._pools.get(database)
                if pool is None:
                    pool = super().__new__(cls)
                    pool.database = database
                    pool.database_name = database.name
                    pool._classes = {}
                    pool._initialised = False
                    cls._pools[database] = pool
        return pool

    @classmethod
    def register(cls, *classes, module: str):
        """Register model classes under the name of their module."""
        for klass in classes:
            if not isinstance(klass, ModelMeta):
                raise ModelError(
                    f'{klass!r} of module {module!r} is not a model: '
                    'derive it from Model or ModelSQL, or give it '
                    'metaclass=PoolMeta if it extends one.')
        with cls._lock:
            registered = cls._registered.setdefault(module, [])
            for klass in classes:
                if klass not in registered:
                    registered.append(klass)

    @classmethod
    def forget(cls, database_name: str | None = None):
        """Drop the pools (all, or those of one database name).

        The next use of a forgotten pool initialises it anew.
        """
        with cls._lock:
            for database in list(cls._pools):
                if database_name in (None, database.name):
                    del cls._pools[database]

    @staticmethod
    def modules() -> list[str]:
        """Return the modules of the framework and of ``[pool] modules``."""
        return CORE_MODULES + [
            m for m in config.getlist('pool', 'modules')
            if m not in CORE_MODULES]

    def init(self, update: bool = True) -> 'Pool':
        """Import the modules, build the models and, if update, the tables.

        It may be called again without harm; without update it only
        checks that the database was initialised.
        """
        with self._lock:
            modules = self.modules()
            for module_name in modules:
                _import_module(module_name)
            self._classes = self._compose(modules)
            for klass in self._classes.values():
                klass.__setup__()
            for klass in self._classes.values():
                klass.__post_setup__()
            # The tables are built from the set-up classes, which may
            # ask the pool for the targets of their links.
            self._initialised = True
        try:
            if not self.database.exists():
                if not update or not getattr(
                        self.database, 'created_on_init', False):
                    raise DatabaseNotFound(
                        f'The database {self.database_name!r} does not '
                        f'exist: run "trytond-queue init -d '
                        f'{self.database_name}".')
                self.database.create()
            if update:
                self._update_tables()
            else:
                self._check_tables()
        except BaseException:
            self._initialised = False
            raise
        return self

    def _compose(self, modules):
        by_name = {}
        for module_name in modules:
            for klass in self._registered.get(module_name, []):
                classes = by_name.setdefault(klass.__name__, [])
                # A class registered by two modules is one base.
                if klass not in classes:
                    classes.append(klass)
        composed = {}
        for name, classes in by_name.items():
            # A new class per pool keeps the setup of each pool apart.
            composed[name] = type(
                name, tuple(reversed(classes)),
                {'__module__': classes[0].__module__})
        return composed

    def _sql_classes(self):
        from .model import ModelSQL
        return [k for k in self._classes.values() if issubclass(k, ModelSQL)]

    def _update_tables(self):
        with Transaction().start(self.database_name, 0) as transaction:
            self.database.lock_schema(transaction.connection)
            classes = self._sql_classes()
            for klass in classes:
                klass._create_table(self)
            for klass in classes:
                klass.__register__(self)
        logger.info(
            '%s: %d tables up to date', self.database_name,
            len(self._sql_classes()))

    def _check_tables(self):
        """Refuse a database whose tables lack what the models need."""
        init = f'run "trytond-queue init -d {self.database_name}"'
        with Transaction().start(
                self.database_name, 0, readonly=True) as transaction:
            connection = transaction.connection
            for klass in self._sql_classes():
                if not self.database.table_exists(connection, klass._table):
                    raise DatabaseNotInitialised(
                        f'The database {self.database_name!r} has no '
                        f'table {klass._table!r}: {init}.')
                missing = set(klass._fields) - self.database.columns(
                    connection, klass._table)
                if missing:
                    raise DatabaseNotInitialised(
                        f'The table {klass._table!r} of '
                        f'{self.database_name!r} lacks the columns '
                        f'{", ".join(sorted(missing))}, added since it '
                        f'was created: {init} to update it.')

    def get(self, name: str):
        """Return the class of the model name."""
        if not self._initialised:
            raise ModelError(
                f'The pool of {self.database_name!r} is not initialised: '
                f'call Pool({self.database_name!r}).init() first.')
        try:
            return self._classes[name]
        except KeyError:
            raise ModelError(
                f'The model {name!r} is not registered: add the module '
                'that registers it to [pool] modules.') from None

    def iterobject(self):
        """Yield (name, class) of every model of the pool."""
        return iter(self._classes.items())


def _import_module(module_name):
    try:
        module = importlib.import_module(module_name)
    except ImportError as exception:
        raise ConfigError(
            f'The module {module_name!r} of [pool] modules cannot be '
            f'imported: {exception}. Check its name and that it is on '
            'the Python path.') from exception
    register = getattr(module, 'register', None)
    if register is not None:
        register()
