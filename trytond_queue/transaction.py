"""Transactions: a connection, a user and a context for a unit of work.

Each thread keeps a stack of transactions; ``Transaction()`` returns the
innermost one, so that model code reaches the current connection, user
and context without passing them around.
"""
import logging
import random
import threading
import time

from sql import Flavor

from . import backend
from .config import config
from .exceptions import TrytondQueueError

__all__ = ['Transaction', 'run_in_transaction']

logger = logging.getLogger(__name__)


class _Restore:
    """Undo a change of the transaction when its with block ends."""

    def __init__(self, transaction, name, previous):
        self.transaction = transaction
        self.name = name
        self.previous = previous

    def __enter__(self):
        return self.transaction

    def __exit__(self, *exc_info):
        setattr(self.transaction, self.name, self.previous)


class Transaction:
    """The unit of work of the current thread.

    ``Transaction()`` returns the innermost started transaction of the
    thread, or a new one waiting for :meth:`start`.
    """

    _local = threading.local()

    def __new__(cls, new=False):
        stack = cls._stack()
        if stack and not new:
            return stack[-1]
        instance = super().__new__(cls)
        instance.started = False
        return instance

    @classmethod
    def _stack(cls):
        try:
            return cls._local.stack
        except AttributeError:
            cls._local.stack = []
            return cls._local.stack

    def start(self, database_name: str, user: int, context=None,
              readonly=False, autocommit=False) -> 'Transaction':
        """Open the transaction on the database, as the user.

        Used as a context manager, it commits on a clean exit and rolls
        back on an exception.  Started within another transaction, it
        opens a new one with a connection of its own.
        """
        if self.started:
            return Transaction(new=True).start(
                database_name, user, context=context, readonly=readonly,
                autocommit=autocommit)
        database = backend.Database(database_name)
        if not readonly and not database.has_concurrent_writers:
            self._check_no_writer(database)
        self.connection = database.get_connection(
            readonly=readonly, autocommit=autocommit)
        self.database = database
        self.user = user
        self.context = dict(context or {})
        self.readonly = readonly
        self.autocommit = autocommit
        self.cache = {}
        self.storage = {}
        # Counts ModelSQL deletions, for those who cache what exists.
        self.deletions = 0
        self._before_commit = []
        self._after_commit = []
        self._committed_hooks = []
        self._previous_flavor = Flavor.get()
        Flavor.set(database.flavor)
        self.started = True
        self._stack().append(self)
        return self

    def _check_no_writer(self, database):
        # The outer transaction of this thread holds the write lock: the
        # new one would wait for it until the busy timeout.
        for transaction in self._stack():
            if (transaction.database is database
                    and not transaction.readonly
                    and not transaction.autocommit):
                raise TrytondQueueError(
                    f'The database {database.name!r} takes one writer at '
                    'a time and this thread already writes in it: start '
                    'the new transaction with readonly=True, or after '
                    'the current one ends.')

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc_value, traceback):
        try:
            if exc_type is None and not self.readonly:
                self.commit(begin=False)
            else:
                try:
                    self.rollback(begin=False)
                except Exception:
                    # The connection may be the cause of the exception;
                    # the pool replaces it and the first error stands.
                    if exc_type is None:
                        raise
                    logger.debug('rollback failed', exc_info=True)
        finally:
            self.stop()

    def stop(self, commit=False):
        """End the transaction, give back its connection, run hooks."""
        if not self.started:
            return
        try:
            if commit:
                self.commit(begin=False)
        finally:
            stack = self._stack()
            if stack and stack[-1] is self:
                stack.pop()
            else:
                stack.remove(self)
            Flavor.set(self._previous_flavor)
            self.started = False
            self.database.put_connection(self.connection)
            self.connection = None
        hooks, self._committed_hooks = self._committed_hooks, []
        for function, args, kwargs in hooks:
            # The work is committed: a failing hook must neither look
            # like a failure of the transaction nor keep the next hooks
            # from running.
            try:
                function(*args, **kwargs)
            except Exception:
                logger.critical(
                    '%s: the after-commit hook %r failed',
                    self.database.name, function, exc_info=True)

    @property
    def database_name(self) -> str:
        """The name of the database of the transaction."""
        return self.database.name

    def cursor(self):
        """Return a cursor of the transaction's connection."""
        return self.connection.cursor()

    def set_user(self, user: int):
        """Run as another user until the returned manager exits."""
        previous, self.user = self.user, user
        return _Restore(self, 'user', previous)

    def set_context(self, context=None, **kwargs):
        """Add keys to the context until the returned manager exits."""
        previous = self.context
        self.context = dict(previous)
        self.context.update(context or {})
        self.context.update(kwargs)
        return _Restore(self, 'context', previous)

    def reset_context(self):
        """Empty the context until the returned manager exits."""
        previous, self.context = self.context, {}
        return _Restore(self, 'context', previous)

    def before_commit(self, function, *args, **kwargs):
        """Call function in the transaction just before it commits."""
        self._before_commit.append((function, args, kwargs))

    def after_commit(self, function, *args, **kwargs):
        """Call function once the transaction has committed and ended.

        Nothing is called if the transaction rolls back.  The function
        runs outside the transaction and may start transactions itself;
        an exception it raises is logged, not raised.
        """
        self._after_commit.append((function, args, kwargs))

    def hooks_mark(self):
        """Return a mark of the hooks added so far, for a savepoint."""
        return len(self._before_commit), len(self._after_commit)

    def forget_hooks(self, mark):
        """Forget the hooks added since mark: their savepoint rolled back."""
        del self._before_commit[mark[0]:]
        del self._after_commit[mark[1]:]

    def commit(self, begin=True):
        """Commit the work done so far; the transaction goes on."""
        # A hook may add another hook, for example a flush that notifies.
        while self._before_commit:
            function, args, kwargs = self._before_commit.pop(0)
            function(*args, **kwargs)
        if not self.autocommit:
            self.connection.commit()
        self._committed_hooks.extend(self._after_commit)
        self._after_commit = []
        self.cache.clear()
        self.storage.clear()
        if begin and not self.autocommit:
            self.database.begin(self.connection, self.readonly)

    def rollback(self, begin=True):
        """Undo the work done since the last commit."""
        self._before_commit.clear()
        self._after_commit.clear()
        self.cache.clear()
        self.storage.clear()
        if not self.autocommit:
            self.connection.rollback()
            if begin:
                self.database.begin(self.connection, self.readonly)


def run_in_transaction(database_name, user, function, *args, context=None,
                       readonly=False, retries=None, **kwargs):
    """Call function in a new transaction and commit, retrying conflicts.

    A serialization failure or a deadlock rolls the transaction back and
    runs the function again, up to ``[database] retry`` times, after a
    short random pause so that the two parties do not meet again.
    """
    if retries is None:
        retries = config.getint('database', 'retry', fallback=5) or 0
    for attempt in range(retries + 1):
        try:
            with Transaction().start(
                    database_name, user, context=context,
                    readonly=readonly):
                return function(*args, **kwargs)
        except Exception as exception:
            database = backend.Database(database_name)
            if (attempt >= retries
                    or not database.is_serialization_failure(exception)):
                raise
            delay = random.uniform(0, 0.01 * 2 ** attempt)
            logger.debug(
                '%s: serialization failure, retry %d in %.1f ms',
                database_name, attempt + 1, delay * 1000)
            time.sleep(delay)


