"""Transactions: commit and rollback, context, hooks, threads, retries."""
import logging
import threading
import time

import pytest
from sql import Select, Table
from sql.functions import Function

from trytond_queue import backend
from trytond_queue.exceptions import TrytondQueueError
from trytond_queue.pool import Pool
from trytond_queue.transaction import Transaction, run_in_transaction


class BackendPid(Function):
    __slots__ = ()
    _function = 'PG_BACKEND_PID'


class TerminateBackend(Function):
    __slots__ = ()
    _function = 'PG_TERMINATE_BACKEND'


def party_names(env):
    with env.transaction(readonly=True):
        return [p.name for p in Pool().get('test.party').search([])]


def create_party(name):
    party, = Pool().get('test.party').create([{'name': name}])
    return party


def run_threads(*targets, timeout=20):
    """Run each target in a thread; raise the first exception raised."""
    errors = []

    def run(target):
        try:
            target()
        except BaseException as exception:
            errors.append(exception)

    threads = [threading.Thread(target=run, args=(t,)) for t in targets]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout)
        assert not thread.is_alive(), 'a thread did not finish'
    if errors:
        raise errors[0]


def test_clean_exit_commits(env):
    with env.transaction() as transaction:
        create_party('kept')
        assert Transaction() is transaction
    assert not Transaction().started
    assert party_names(env) == ['kept']


def test_exception_rolls_back_and_propagates(env):
    with pytest.raises(KeyError):
        with env.transaction():
            create_party('dropped')
            raise KeyError('stop')
    assert not Transaction().started
    assert party_names(env) == []


def test_explicit_commit_keeps_the_work_done_before_it(env):
    with pytest.raises(KeyError):
        with env.transaction() as transaction:
            create_party('committed')
            transaction.commit()
            create_party('dropped')
            raise KeyError('stop')
    assert party_names(env) == ['committed']


def test_explicit_rollback_drops_the_work_and_goes_on(env):
    with env.transaction() as transaction:
        create_party('dropped')
        transaction.rollback()
        create_party('kept')
    assert party_names(env) == ['kept']


def test_readonly_transaction_keeps_nothing(env):
    with env.transaction(readonly=True) as transaction:
        assert transaction.readonly
        with pytest.raises(Exception, match='(?i)read'):
            create_party('refused')
    assert party_names(env) == []


def test_start_copies_the_context_and_knows_its_database(env):
    context = {'language': 'fr'}
    with env.transaction(user=3, context=context) as transaction:
        transaction.context['company'] = 1
        assert transaction.user == 3
        assert transaction.database_name == env.database_name
        assert transaction.database is backend.Database(env.database_name)
        assert transaction.connection is not None
    assert context == {'language': 'fr'}


def test_nested_set_context_restores_each_level(env):
    with env.transaction(context={'a': 1}) as transaction:
        with transaction.set_context({'b': 2}, c=3):
            assert transaction.context == {'a': 1, 'b': 2, 'c': 3}
            with transaction.set_context(a=10, b=None):
                assert transaction.context == {'a': 10, 'b': None, 'c': 3}
            assert transaction.context == {'a': 1, 'b': 2, 'c': 3}
        assert transaction.context == {'a': 1}
        with transaction.reset_context():
            assert transaction.context == {}
        assert transaction.context == {'a': 1}


def test_set_context_keywords_win_over_the_dictionary(env):
    with env.transaction() as transaction:
        with transaction.set_context({'key': 'dict', 1: 'int'}, key='kw'):
            assert transaction.context == {'key': 'kw', 1: 'int'}


def test_set_context_is_restored_after_an_exception(env):
    with env.transaction() as transaction:
        with pytest.raises(ValueError):
            with transaction.set_context(a=1):
                raise ValueError
        assert transaction.context == {}


def test_set_user_restores_the_user(env):
    with env.transaction(user=1) as transaction:
        with transaction.set_user(2) as same:
            assert same is transaction
            assert Transaction().user == 2
            with transaction.set_user(0):
                assert Transaction().user == 0
            assert Transaction().user == 2
        assert Transaction().user == 1


def test_transaction_started_inside_another_is_apart(env):
    with env.transaction(user=1) as outer:
        create_party('outer')
        with env.transaction(user=2, readonly=True) as inner:
            assert inner is not outer
            assert Transaction() is inner
            assert inner.connection is not outer.connection
            # The outer transaction has not committed yet.
            assert Pool().get('test.party').search([]) == []
        assert Transaction() is outer
        assert Transaction().user == 1
    assert party_names(env) == ['outer']


@pytest.mark.parametrize('env', ['postgresql'], indirect=True)
def test_write_transaction_inside_another_commits_on_its_own(env):
    with pytest.raises(KeyError):
        with env.transaction():
            create_party('outer')
            with env.transaction():
                create_party('inner')
            raise KeyError('stop')
    assert party_names(env) == ['inner']


@pytest.mark.parametrize('env', ['sqlite'], indirect=True)
def test_sqlite_refuses_a_second_writer_in_the_same_thread(env):
    with env.transaction():
        with pytest.raises(TrytondQueueError, match='readonly=True'):
            env.transaction().__enter__()
        assert len(Transaction._stack()) == 1
        create_party('outer')
    assert party_names(env) == ['outer']


def test_after_commit_hooks_run_once_committed_and_outside(env):
    calls = []

    def hook(label):
        calls.append((label, Transaction().started, party_names(env)))

    with env.transaction() as transaction:
        create_party('seen')
        transaction.after_commit(hook, 'first')
        transaction.after_commit(hook, label='second')
        assert calls == []
    assert calls == [('first', False, ['seen']), ('second', False, ['seen'])]


def test_after_commit_hooks_do_not_run_on_rollback(env):
    calls = []
    with pytest.raises(KeyError):
        with env.transaction() as transaction:
            transaction.after_commit(calls.append, 'on exception')
            raise KeyError('stop')
    with env.transaction() as transaction:
        transaction.after_commit(calls.append, 'rolled back')
        transaction.rollback()
        transaction.after_commit(calls.append, 'after the rollback')
    assert calls == ['after the rollback']


def test_after_commit_hook_failure_is_logged_and_the_next_run(
        env, caplog):
    calls = []

    def fail():
        raise RuntimeError('hook bug')

    with caplog.at_level(logging.CRITICAL, 'trytond_queue.transaction'):
        with env.transaction() as transaction:
            create_party('kept')
            transaction.after_commit(fail)
            transaction.after_commit(calls.append, 'next')
    assert calls == ['next']
    assert party_names(env) == ['kept']
    record, = caplog.records
    assert record.exc_info[1].args == ('hook bug',)


def test_before_commit_hooks_write_within_the_transaction(env):
    calls = []

    def hook(name):
        calls.append(Transaction().started)
        create_party(name)
        if name == 'first':
            Transaction().before_commit(hook, 'added by a hook')

    with env.transaction() as transaction:
        transaction.before_commit(hook, 'first')
        assert party_names(env) == []
    assert calls == [True, True]
    assert sorted(party_names(env)) == ['added by a hook', 'first']


def test_before_commit_hooks_do_not_run_on_rollback(env):
    calls = []
    with pytest.raises(KeyError):
        with env.transaction() as transaction:
            transaction.before_commit(calls.append, 'never')
            raise KeyError('stop')
    assert calls == []


def test_cache_and_storage_are_emptied_at_commit_and_rollback(env):
    with env.transaction() as transaction:
        for end in (transaction.commit, transaction.rollback):
            transaction.cache['x'] = 1
            transaction.storage['y'] = 2
            end()
            assert transaction.cache == {} and transaction.storage == {}


def test_each_thread_sees_its_own_transaction(env):
    started = threading.Barrier(2, timeout=10)
    read = threading.Barrier(2, timeout=10)
    seen = {}

    def writer():
        with env.transaction(user=1) as transaction:
            create_party('uncommitted')
            started.wait()
            read.wait()
            seen['writer'] = (
                Transaction() is transaction, Transaction().user,
                party_names_here())

    def reader():
        with env.transaction(user=2, readonly=True) as transaction:
            started.wait()
            seen['reader'] = (
                Transaction() is transaction, Transaction().user,
                party_names_here())
            read.wait()

    def party_names_here():
        return [p.name for p in Pool().get('test.party').search([])]

    run_threads(writer, reader)
    assert seen == {
        'writer': (True, 1, ['uncommitted']),
        'reader': (True, 2, []),
        }
    assert not Transaction().started


def test_run_in_transaction_commits_and_returns(env):
    result = run_in_transaction(
        env.database_name, 5, lambda name: (create_party(name).id,
            Transaction().user, Transaction().context),
        'made', context={'k': 'v'})
    assert result[1:] == (5, {'k': 'v'})
    assert party_names(env) == ['made']


def test_run_in_transaction_does_not_retry_other_errors(env):
    calls = []

    def fail():
        calls.append(1)
        raise ValueError('not a conflict')

    with pytest.raises(ValueError):
        run_in_transaction(env.database_name, 0, fail)
    assert calls == [1]


@pytest.mark.parametrize('env', ['postgresql'], indirect=True)
def test_serialization_failure_is_retried_by_run_in_transaction(env):
    with env.transaction():
        counter_id = create_party('0').id
    both_read = threading.Barrier(2, timeout=10)
    attempts = []

    def increment():
        first = threading.current_thread() not in attempts
        attempts.append(threading.current_thread())
        Party = Pool().get('test.party')
        counter = Party(counter_id)
        value = int(counter.name)
        if first:
            # Both snapshots are taken before either updates the row.
            both_read.wait()
        Party.write([counter], {'name': str(value + 1)})

    def target():
        run_in_transaction(env.database_name, 0, increment)

    run_threads(target, target)
    assert party_names(env) == ['2']
    assert len(attempts) == 3


@pytest.mark.parametrize('env', ['postgresql'], indirect=True)
def test_broken_connections_of_the_pool_are_replaced(env, caplog):
    database = backend.Database(env.database_name)

    def backend_pid(transaction):
        cursor = transaction.connection.cursor()
        cursor.execute(*Select([BackendPid()]))
        return cursor.fetchone()[0]

    with env.transaction() as outer:
        with env.transaction() as inner:
            old_pids = {backend_pid(outer), backend_pid(inner)}
    activity = Table('pg_stat_activity')
    admin = database.connect()
    try:
        cursor = admin.cursor()
        cursor.execute(*database._flavored(activity.select(
            TerminateBackend(activity.pid),
            where=activity.pid.in_(list(old_pids)))))
        deadline = time.monotonic() + 10
        while True:
            cursor.execute(*database._flavored(activity.select(
                activity.pid, where=activity.pid.in_(list(old_pids)))))
            if not cursor.fetchall() or time.monotonic() > deadline:
                break
            time.sleep(0.02)
    finally:
        admin.close()
    with caplog.at_level(logging.INFO, 'trytond_queue.backend'):
        with env.transaction() as outer:
            with env.transaction() as inner:
                new_pids = {backend_pid(outer), backend_pid(inner)}
                create_party('after the break')
    assert 'replacing a broken connection' in caplog.text
    assert not new_pids & old_pids
    assert party_names(env) == ['after the break']
