"""Queuing a call: what ``__queue__`` stores, returns and refuses."""
import datetime
import decimal
import math

import pytest

from trytond_queue.config import config
from trytond_queue.exceptions import ModelError, QueueError
from trytond_queue.pool import Pool
from trytond_queue.queue.store import utcnow
from trytond_queue.transaction import Transaction


@pytest.fixture
def queued(env):
    """The backend with a worker configured, so that tasks stay pending."""
    config.set('queue', 'worker', 'True')
    return env


def tasks(env):
    """Return the rows of ir_queue as dictionaries, in id order."""
    with env.transaction():
        Queue = Pool().get('ir.queue')
        return Queue.read([t.id for t in Queue.search([])])


def logs(env):
    """Return the rows of test.log as dictionaries, in id order."""
    with env.transaction():
        Log = Pool().get('test.log')
        return Log.read([r.id for r in Log.search([])])


def create_logs(count, name='target'):
    """Create records of test.log for calls to target."""
    Log = Pool().get('test.log')
    return Log.create([{'name': name}] * count)


def queue_insert(env, name='task', context=None, records=None):
    """Queue test.log.insert in a transaction of its own; return the id."""
    with env.transaction(context=context):
        Log = Pool().get('test.log')
        return Log.__queue__.insert(records or Log(1), name)


def test_default_options_are_stored(queued):
    before = utcnow()
    with queued.transaction(user=3, context={'language': 'fr'}):
        Log = Pool().get('test.log')
        task_id = Log.__queue__.insert(Log(7), 'a', name='b')
    task, = tasks(queued)
    assert task['id'] == task_id
    assert (task['name'], task['model'], task['method']) == (
        'default', 'test.log', 'insert')
    assert (task['state'], task['priority'], task['attempts']) == (
        'pending', 0, 0)
    assert (task['max_attempts'], task['timeout']) == (5, None)
    assert task['scheduled_at'] is None and task['expected_at'] is None
    assert before <= task['enqueued_at'] <= utcnow()
    assert task['due_at'] == task['enqueued_at']
    assert task['data'] == {
        'model': 'test.log', 'method': 'insert', 'user': 3,
        'context': {'language': 'fr'}, 'instances': 7,
        'args': ['a'], 'kwargs': {'name': 'b'}}


def test_queue_name_is_stored(queued):
    queue_insert(queued, context={'queue_name': 'mail.out-2'})
    assert [t['name'] for t in tasks(queued)] == ['mail.out-2']


@pytest.mark.parametrize('name', [
    '', 'with space', 'x' * 65, 'caf\u00e9', 'line\n', 'a;b', 5])
def test_invalid_queue_name_is_refused_and_nothing_queued(queued, name):
    with queued.transaction(context={'queue_name': name}):
        Log = Pool().get('test.log')
        with pytest.raises(QueueError, match='queue name'):
            Log.__queue__.insert(Log(1), 'x')
    assert tasks(queued) == []


def test_longest_queue_name_is_accepted(queued):
    queue_insert(queued, context={'queue_name': 'q' * 64})
    assert [t['name'] for t in tasks(queued)] == ['q' * 64]


def test_scheduled_at_makes_the_task_scheduled(queued):
    before = utcnow()
    queue_insert(
        queued,
        context={'queue_scheduled_at': datetime.timedelta(minutes=5)})
    task, = tasks(queued)
    assert task['state'] == 'scheduled'
    assert (before + datetime.timedelta(minutes=5)
        <= task['scheduled_at']
        <= utcnow() + datetime.timedelta(minutes=5))
    assert task['due_at'] == task['scheduled_at']


def test_scheduled_at_in_the_past_is_pending(queued):
    queue_insert(
        queued,
        context={'queue_scheduled_at': datetime.timedelta(seconds=-5)})
    task, = tasks(queued)
    assert task['state'] == 'pending'
    assert task['scheduled_at'] < task['enqueued_at']


def test_expected_at_sets_the_deadline(queued):
    queue_insert(
        queued, context={'queue_expected_at': datetime.timedelta(hours=1)})
    task, = tasks(queued)
    assert task['state'] == 'pending'
    assert task['expected_at'] == task['due_at']
    assert task['expected_at'] - task['enqueued_at'] == (
        datetime.timedelta(hours=1))


@pytest.mark.parametrize('key', ['queue_scheduled_at', 'queue_expected_at'])
def test_time_that_is_not_a_timedelta_is_refused(queued, key):
    with queued.transaction(context={key: 60}):
        Log = Pool().get('test.log')
        with pytest.raises(QueueError, match=key):
            Log.__queue__.insert(Log(1), 'x')
    assert tasks(queued) == []


@pytest.mark.parametrize('batch, sizes', [
    (True, [20, 20, 5]), (10, [10, 10, 10, 10, 5]), (None, [45]),
    (50, [45])])
def test_batch_splits_the_records_into_tasks(queued, batch, sizes):
    with queued.transaction(context={'queue_batch': batch}):
        records = create_logs(45)
        Log = Pool().get('test.log')
        task_ids = Log.__queue__.record(records)
    rows = tasks(queued)
    assert task_ids == [t['id'] for t in rows]
    assert [len(t['data']['instances']) for t in rows] == sizes
    instances = [i for t in rows for i in t['data']['instances']]
    assert instances == [r.id for r in records]


def test_batch_true_follows_the_configured_size(queued):
    config.set('queue', 'batch_size', '7')
    with queued.transaction(context={'queue_batch': True}):
        task_ids = Pool().get('test.log').__queue__.record(
            list(range(1, 16)))
    assert [len(t['data']['instances']) for t in tasks(queued)] == [
        7, 7, 1]
    assert len(task_ids) == 3


@pytest.mark.parametrize('batch', [-1, 'ten', 2.5])
def test_invalid_batch_is_refused(queued, batch):
    with queued.transaction(context={'queue_batch': batch}):
        Log = Pool().get('test.log')
        with pytest.raises(QueueError, match='queue_batch'):
            Log.__queue__.record([1, 2, 3])
    assert tasks(queued) == []


def test_priority_is_stored(queued):
    queue_insert(queued, context={'queue_priority': -3})
    queue_insert(queued, context={'queue_priority': 7})
    assert [t['priority'] for t in tasks(queued)] == [-3, 7]


@pytest.mark.parametrize('priority', [True, '1', 1.5, 2 ** 31, -2 ** 31 - 1])
def test_invalid_priority_is_refused(queued, priority):
    with queued.transaction(context={'queue_priority': priority}):
        Log = Pool().get('test.log')
        with pytest.raises(QueueError, match='queue_priority'):
            Log.__queue__.insert(Log(1), 'x')
    assert tasks(queued) == []


def test_max_attempts_is_stored_and_defaults_to_the_configuration(queued):
    config.set('queue', 'max_attempts', '9')
    queue_insert(queued)
    queue_insert(queued, context={'queue_max_attempts': 2})
    assert [t['max_attempts'] for t in tasks(queued)] == [9, 2]


@pytest.mark.parametrize('attempts', [0, -1, 'many', 2.0, False])
def test_invalid_max_attempts_is_refused(queued, attempts):
    with queued.transaction(context={'queue_max_attempts': attempts}):
        Log = Pool().get('test.log')
        with pytest.raises(QueueError, match='queue_max_attempts'):
            Log.__queue__.insert(Log(1), 'x')
    assert tasks(queued) == []


def test_timeout_is_stored_and_defaults_to_the_configuration(queued):
    queue_insert(queued)
    config.set('queue', 'timeout', '30')
    queue_insert(queued)
    queue_insert(queued, context={'queue_timeout': 1.5})
    assert [t['timeout'] for t in tasks(queued)] == [None, 30, 1.5]


@pytest.mark.parametrize('timeout', [
    0, -1, '10', True, math.nan, math.inf])
def test_invalid_timeout_is_refused(queued, timeout):
    with queued.transaction(context={'queue_timeout': timeout}):
        Log = Pool().get('test.log')
        with pytest.raises(QueueError, match='queue_timeout'):
            Log.__queue__.insert(Log(1), 'x')
    assert tasks(queued) == []


def test_unique_call_twice_in_one_transaction_gives_one_task(queued):
    with queued.transaction(context={'queue_unique': True}):
        Log = Pool().get('test.log')
        first = Log.__queue__.insert(Log(1), 'x')
        second = Log.__queue__.insert(Log(1), 'x')
    assert first == second
    assert [t['id'] for t in tasks(queued)] == [first]


def test_unique_call_in_two_transactions_gives_one_task(queued):
    context = {'queue_unique': True}
    first = queue_insert(queued, context=context)
    second = queue_insert(queued, context=context)
    assert first == second
    assert [t['id'] for t in tasks(queued)] == [first]


def test_unique_calls_that_differ_give_their_own_tasks(queued):
    with queued.transaction(context={'queue_unique': True}):
        Log = Pool().get('test.log')
        ids = [
            Log.__queue__.insert(Log(1), 'x'),
            Log.__queue__.insert(Log(2), 'x'),
            Log.__queue__.insert(Log(1), 'y'),
            Log.__queue__.insert([Log(1)], 'x')[0],
            ]
        with Transaction().set_context(queue_name='other'):
            ids.append(Log.__queue__.insert(Log(1), 'x'))
        # The same call without the key is not deduplicated.
        with Transaction().set_context(queue_unique=False):
            ids.append(Log.__queue__.insert(Log(1), 'x'))
    assert len(set(ids)) == 6
    assert [t['id'] for t in tasks(queued)] == ids


def test_unique_task_is_queued_again_once_finished(env):
    # Without a worker the first task runs at commit, so it no longer
    # waits when the same call is queued again.
    context = {'queue_unique': True}
    first = queue_insert(env, context=context)
    second = queue_insert(env, context=context)
    assert first != second
    assert [t['state'] for t in tasks(env)] == ['done', 'done']


def test_unique_and_plain_tasks_keep_the_order_of_the_calls(queued):
    with queued.transaction():
        Log = Pool().get('test.log')
        ids = [Log.__queue__.insert(Log(1), 'x') for _ in range(5)]
        with Transaction().set_context(queue_unique=True):
            ids.append(Log.__queue__.insert(Log(1), 'x'))
            again = Log.__queue__.insert(Log(1), 'x')
        ids += [Log.__queue__.insert(Log(1), 'x') for _ in range(3)]
    assert again == ids[5]
    assert ids == sorted(ids)
    assert [t['id'] for t in tasks(queued)] == ids
    assert [bool(t['unique_key']) for t in tasks(queued)] == (
        [False] * 5 + [True] + [False] * 3)


def test_one_record_gives_an_id_and_a_list_gives_ids(queued):
    with queued.transaction():
        records = create_logs(3)
        Log = Pool().get('test.log')
        single = Log.__queue__.record(records[0])
        several = Log.__queue__.record(records)
        one = Log.__queue__.record(records[:1])
        by_id = Log.__queue__.record(records[1].id)
        bound = records[2].__queue__.record('bound')
    assert isinstance(single, int) and isinstance(by_id, int)
    assert isinstance(bound, int)
    assert isinstance(several, list) and len(several) == 1
    assert isinstance(one, list) and len(one) == 1
    rows = tasks(queued)
    assert [t['id'] for t in rows] == [
        single, several[0], one[0], by_id, bound]
    assert [t['data']['instances'] for t in rows] == [
        records[0].id, [r.id for r in records], [records[0].id],
        records[1].id, records[2].id]
    assert rows[-1]['data']['args'] == ['bound']


def test_ids_are_those_of_the_committed_rows(queued):
    with queued.transaction():
        Log = Pool().get('test.log')
        ids = [Log.__queue__.insert(Log(i), str(i)) for i in range(1, 60)]
    rows = tasks(queued)
    assert [t['id'] for t in rows] == ids
    assert [t['data']['args'] for t in rows] == [
        [str(i)] for i in range(1, 60)]


def test_queued_rows_are_visible_to_the_queue_model_at_once(queued):
    with queued.transaction():
        Log = Pool().get('test.log')
        task_id = Log.__queue__.insert(Log(1), 'x')
        Queue = Pool().get('ir.queue')
        assert [t.id for t in Queue.search([])] == [task_id]
        assert Queue(task_id).state == 'pending'


def test_records_of_another_model_are_refused(queued):
    with queued.transaction():
        Party = Pool().get('test.party')
        Log = Pool().get('test.log')
        with pytest.raises(QueueError, match='test.log'):
            Log.__queue__.insert(Party(1), 'x')
        with pytest.raises(QueueError, match='saved records'):
            Log.__queue__.insert(Log(), 'x')
        with pytest.raises(QueueError, match='first argument'):
            Log.__queue__.insert()
    assert tasks(queued) == []


ROUND_TRIP = [
    decimal.Decimal('12.3400'),
    datetime.datetime(2024, 2, 29, 23, 59, 58, 123456),
    datetime.date(2024, 1, 31),
    datetime.time(13, 14, 15, 16),
    datetime.timedelta(days=-1, seconds=5, microseconds=7),
    b'\x00\xffbytes',
    {'nested': [decimal.Decimal('1'), {'when': datetime.date(2000, 1, 1)}],
        'empty': {}, 'none': None, 'text': 'caf\u00e9'},
    [[1, 2.5, True], ['a', b'b', datetime.time(0, 0)]],
    ]


def assert_same(received, sent):
    """Assert equal values of the same types, at every depth."""
    assert type(received) is type(sent)
    assert received == sent
    if isinstance(sent, dict):
        for key in sent:
            assert_same(received[key], sent[key])
    elif isinstance(sent, list):
        for got, expected in zip(received, sent):
            assert_same(got, expected)


def test_arguments_come_back_as_the_same_types(env):
    with env.transaction():
        records = create_logs(2)
        Log = Pool().get('test.log')
        Log.__queue__.record(
            records, *ROUND_TRIP,
            **{f'k{i}': v for i, v in enumerate(ROUND_TRIP)})
    log, = [log for log in logs(env) if log['name'] == 'record']
    assert log['args']['ids'] == [r.id for r in records]
    assert_same(log['args']['args'], ROUND_TRIP)
    assert_same(log['args']['kwargs'],
        {f'k{i}': v for i, v in enumerate(ROUND_TRIP)})


def test_method_receives_the_arguments_it_was_queued_with(
        env, monkeypatch):
    received = []
    with env.transaction():
        Log = Pool().get('test.log')
        monkeypatch.setattr(
            Log, 'capture',
            classmethod(lambda cls, records, *a, **k: received.append(
                (records, a, k))),
            raising=False)
        record, = create_logs(1)
        Log.__queue__.capture(record, *ROUND_TRIP, last=ROUND_TRIP)
    (records, args, kwargs), = received
    assert records.id == record.id
    assert_same(list(args), ROUND_TRIP)
    assert_same(kwargs, {'last': ROUND_TRIP})


class Opaque:
    def __repr__(self):
        return '<opaque>'


@pytest.mark.parametrize('args, kwargs, named', [
    (({1, 2},), {}, 'argument 1 of record()'),
    (('ok', Opaque()), {}, 'argument 2 of record()'),
    ((), {'when': {'at': [1, Opaque()]}},
        "argument 'when' of record()['at'][1]"),
    ((math.nan,), {}, 'argument 1 of record()'),
    (({1: 'one'},), {}, 'argument 1 of record()'),
    ])
def test_argument_that_is_not_json_is_refused_by_name(
        env, args, kwargs, named):
    with env.transaction():
        Log = Pool().get('test.log')
        record, = create_logs(1)
        Log.__queue__.insert(record, 'kept')
        with pytest.raises(QueueError) as info:
            Log.__queue__.record(record, *args, **kwargs)
        assert named in str(info.value)
    # The caller went on and committed: only the accepted task ran.
    assert [t['method'] for t in tasks(env)] == ['insert']
    assert [log['name'] for log in logs(env)] == ['target', 'kept']


def test_context_that_is_not_json_is_refused_by_key(queued):
    with queued.transaction(context={'opaque': Opaque()}):
        Log = Pool().get('test.log')
        with pytest.raises(QueueError, match=r"context\['opaque'\]"):
            Log.__queue__.insert(Log(1), 'x')
    assert tasks(queued) == []


@pytest.mark.parametrize('method, message', [
    ('missing', "no method 'missing'"),
    ('_private', "'_private' is not a public method"),
    ('name', "no method 'name'"),
    ])
def test_unknown_or_private_method_is_refused(queued, method, message):
    with queued.transaction():
        Log = Pool().get('test.log')
        with pytest.raises(ModelError, match=message):
            getattr(Log.__queue__, method)(Log(1))
    assert tasks(queued) == []


def test_special_attributes_of_the_caller_are_not_methods(queued):
    with queued.transaction():
        Log = Pool().get('test.log')
        assert not hasattr(Log.__queue__, '__wrapped__')


def test_refused_call_leaves_the_caller_free_to_roll_back(env):
    with pytest.raises(QueueError):
        with env.transaction():
            Log = Pool().get('test.log')
            create_logs(1)
            Log.__queue__.insert(Log(1), 'x')
            Log.__queue__.insert(Log(1), {1, 2})
    assert tasks(env) == []
    assert logs(env) == []


def test_queue_outside_a_transaction_is_refused(env):
    with env.transaction():
        Log = Pool().get('test.log')
    with pytest.raises(QueueError, match='inside a transaction'):
        Log.__queue__.insert(Log(1), 'x')


def test_queue_in_a_readonly_transaction_is_refused(env):
    with env.transaction(readonly=True):
        Log = Pool().get('test.log')
        with pytest.raises(QueueError, match='read-only'):
            Log.__queue__.insert(Log(1), 'x')
    assert tasks(env) == []


def test_rolled_back_transaction_leaves_no_task(env):
    with pytest.raises(RuntimeError):
        with env.transaction():
            Log = Pool().get('test.log')
            Log.__queue__.insert(Log(1), 'never')
            raise RuntimeError('the caller changed its mind')
    assert tasks(env) == []
    assert logs(env) == []


def test_explicit_rollback_drops_the_tasks_queued_before_it(env):
    with env.transaction() as transaction:
        Log = Pool().get('test.log')
        Log.__queue__.insert(create_logs(1), 'dropped')
        transaction.rollback()
        Log.__queue__.insert(create_logs(1), 'kept')
    assert [t['data']['args'] for t in tasks(env)] == [['kept']]
    assert [log['name'] for log in logs(env)] == ['target', 'kept']


def test_stored_user_and_context_are_replayed(env):
    context = {
        'language': 'fr', 'company': 4, 'queue_name': 'other',
        'queue_priority': 2, '_check_access': True}
    with env.transaction(user=5, context=context):
        Log = Pool().get('test.log')
        Log.__queue__.record(create_logs(1))
    task, = tasks(env)
    assert task['data']['user'] == 5
    assert task['data']['context'] == {'language': 'fr', 'company': 4}
    log, = [log for log in logs(env) if log['name'] == 'record']
    assert log['user'] == 5
    assert log['context'] == {'language': 'fr', 'company': 4}


def test_task_of_deleted_records_is_done_without_a_call(env):
    with env.transaction():
        records = create_logs(2)
        Log = Pool().get('test.log')
        single = Log.__queue__.record(records[0])
        several = Log.__queue__.record(records)
        Log.delete(records)
    assert [t['state'] for t in tasks(env)] == ['done', 'done']
    assert [t['id'] for t in tasks(env)] == [single] + several
    assert logs(env) == []


def test_task_on_no_record_is_called_with_an_empty_list(env):
    with env.transaction():
        Pool().get('test.log').__queue__.record([], 'none')
    task, = tasks(env)
    assert (task['state'], task['data']['instances']) == ('done', [])
    log, = logs(env)
    assert log['args'] == {'ids': [], 'args': ['none'], 'kwargs': {}}


def test_task_of_partly_deleted_records_gets_the_others(env):
    with env.transaction():
        records = create_logs(4)
        Log = Pool().get('test.log')
        Log.__queue__.record(records, 'rest')
        Log.delete([records[1], records[3]])
    task, = tasks(env)
    assert task['state'] == 'done'
    called, = [log for log in logs(env) if log['name'] == 'record']
    assert called['args']['ids'] == [records[0].id, records[2].id]
    assert called['args']['args'] == ['rest']


def test_task_of_model_without_table_keeps_its_instances(env):
    with env.transaction():
        Seed = Pool().get('my_model')
        task_id = Seed.__queue__.process(Seed(99), 42)
    task, = tasks(env)
    assert (task['id'], task['state']) == (task_id, 'done')


def test_task_queued_by_a_hook_of_the_commit_is_written(queued):
    with queued.transaction() as transaction:
        Log = Pool().get('test.log')
        first = Log.__queue__.insert(Log(1), 'first')
        transaction.before_commit(
            lambda: late.append(Log.__queue__.insert(Log(1), 'late')))
        late = []
    assert [t['id'] for t in tasks(queued)] == [first] + late


def test_buffered_tasks_keep_characters_that_copy_escapes(queued):
    env = queued
    awkward = ['tab\there', 'new\nline', 'back\\slash', 'cr\rhere', '\\N']
    with env.transaction():
        Log = Pool().get('test.log')
        # The first task is inserted at once, the others buffered.
        task_ids = [
            Log.__queue__.insert([], text)[0] for text in ['x'] + awkward]
    with env.transaction(readonly=True):
        Queue = Pool().get('ir.queue')
        stored = [t.data['args'][0] for t in Queue.browse(task_ids)]
    assert stored == ['x'] + awkward
