"""The trytond-queue command line, in the process and as installed."""
import datetime
import decimal
import json
import os
import subprocess
import sys
import time
import uuid

import click
import pytest
from click.testing import CliRunner

from trytond_queue import backend
from trytond_queue.commands import queue as queue_command
from trytond_queue.commands.common import database_names, user_errors
from trytond_queue.commands.queue import main
from trytond_queue.config import config
from trytond_queue.exceptions import ConfigError
from trytond_queue.pool import Pool
from trytond_queue.queue.identity import Identity
from trytond_queue.queue.store import utcnow

from .tasks import add_task

COMMANDS = [
    'init', 'status', 'list', 'show', 'retry', 'cancel', 'clean', 'workers',
    'web']
ENTRY_POINT = os.path.join(os.path.dirname(sys.executable), 'trytond-queue')
HOUR = datetime.timedelta(hours=1)
DAY = datetime.timedelta(days=1)


@pytest.fixture
def runner():
    """A runner that ignores the configuration of the outer shell."""
    return CliRunner(env={
        'TRYTOND_CONFIG': None, 'TRYTOND_DATABASE_NAMES': None})


@pytest.fixture
def config_file(env, tmp_path):
    return env.config_file(tmp_path)


@pytest.fixture
def cli(env, runner, config_file):
    """Run a command on the test database: cli('list', '--json')."""
    def invoke(command, *args):
        return runner.invoke(main, [
            '-c', config_file, command, '-d', env.database_name, *args])
    return invoke


def read_tasks(env, ids, names):
    with env.transaction():
        rows = Pool().get('ir.queue').read(ids, names)
    return {r.pop('id'): r for r in rows}


def assert_clean_failure(result, code, message):
    assert result.exit_code == code, result.output
    assert message in result.output
    assert 'Traceback' not in result.output
    assert isinstance(result.exception, SystemExit)


@pytest.mark.parametrize('command', COMMANDS)
def test_every_command_has_help(runner, command):
    result = runner.invoke(main, [command, '--help'])

    assert result.exit_code == 0, result.output
    assert result.output.startswith(f'Usage: trytond-queue {command} ')
    assert '-c, --config FILE' in result.output
    assert '-d, --database NAME' in result.output


def test_group_help_lists_the_commands(runner):
    result = runner.invoke(main, ['--help'])

    assert result.exit_code == 0
    for command in COMMANDS:
        assert f'  {command} ' in result.output


def test_init_creates_a_missing_database_then_its_tables(
        env, runner, config_file):
    name = f'trytond_queue_init_{uuid.uuid4().hex[:8]}'
    try:
        first = runner.invoke(main, ['-c', config_file, 'init', '-d', name])
        second = runner.invoke(main, ['init', '-c', config_file, '-d', name])

        assert first.exit_code == 0, first.output
        assert f"Created the database '{name}'." in first.output
        assert 'tests.models' in first.output
        assert second.exit_code == 0, second.output
        assert 'Created' not in second.output
        assert 'up to date' in second.output
        Pool(name).init(update=False)
    finally:
        backend.Database(name).drop()
        backend.forget_databases(name)


def test_status_counts_tasks_per_queue_and_state(env, cli):
    now = utcnow()
    add_task(env, enqueued_at=now - HOUR)
    add_task(env, 'done', expected_at=now - 2 * HOUR, finished_at=now)
    add_task(env, 'done', expected_at=now + HOUR)
    add_task(env, 'failed', name='mail')
    add_task(env, 'scheduled', name='mail', expected_at=now - HOUR,
        scheduled_at=now + HOUR)

    result = cli('status', '--json')

    assert result.exit_code == 0, result.output
    figures = json.loads(result.output)
    default, mail = figures['queues']
    assert {k: v for k, v in default.items() if k != 'oldest_pending_age'} \
        == {'queue': 'default', 'pending': 1, 'scheduled': 0, 'running': 0,
            'done': 2, 'failed': 0, 'cancelled': 0, 'overdue': 0,
            'late': 1, 'retried': 0, 'rescued': 0}
    assert 3600 <= default['oldest_pending_age'] < 3700
    assert (mail['queue'], mail['failed'], mail['scheduled']) == (
        'mail', 1, 1)
    assert (mail['overdue'], mail['oldest_pending_age']) == (1, None)
    assert figures['total']['done'] == 2
    assert figures['total']['overdue'] == 1


def test_status_prints_a_table_with_a_total_row(env, cli):
    add_task(env, enqueued_at=utcnow() - datetime.timedelta(seconds=90))
    add_task(env, 'failed', name='mail')

    result = cli('status')

    assert result.exit_code == 0, result.output
    header, default, mail, total = result.output.splitlines()[:4]
    assert header.split()[:4] == ['QUEUE', 'PENDING', 'SCHEDULED', 'RUNNING']
    assert default.split()[:2] == ['default', '1']
    assert '0:01:3' in default
    assert mail.split()[:6] == ['mail', '0', '0', '0', '0', '1']
    assert total.split()[:2] == ['total', '1']


def test_status_says_when_there_are_no_tasks(env, cli):
    result = cli('status')

    assert result.exit_code == 0
    assert result.output == (
        f"No tasks in the database '{env.database_name}'.\n")


def stop_after(calls, count):
    """Return a sleep that records its calls and is Ctrl+C the count-th."""
    def sleep(seconds):
        calls.append(seconds)
        if len(calls) == count:
            raise KeyboardInterrupt
    return sleep


def test_status_watch_redraws_until_ctrl_c(env, cli, monkeypatch):
    add_task(env)
    clears, sleeps = [], []
    monkeypatch.setattr(click, 'clear', lambda: clears.append(True))
    monkeypatch.setattr(queue_command.time, 'sleep', stop_after(sleeps, 2))

    result = cli('status', '--watch', '--interval', '0.5')

    assert result.exit_code == 0, result.output
    assert (len(clears), sleeps) == (2, [0.5, 0.5])
    assert result.output.count('every 0.5 s (Ctrl+C to stop)') == 2
    assert result.output.count('\nQUEUE ') == 2


def test_status_watch_json_prints_a_document_per_line(env, cli,
        monkeypatch):
    add_task(env, 'failed')
    clears, sleeps = [], []
    monkeypatch.setattr(click, 'clear', lambda: clears.append(True))
    monkeypatch.setattr(queue_command.time, 'sleep', stop_after(sleeps, 2))

    result = cli('status', '--watch', '--json')

    assert result.exit_code == 0, result.output
    lines = result.output.split('\n')
    assert [json.loads(line)['total']['failed'] for line in lines[:2]] == [
        1, 1]
    assert sleeps == [2.0, 2.0]
    assert not clears


def test_status_interval_goes_with_watch_only(env, cli):
    result = cli('status', '--interval', '5')

    assert_clean_failure(result, 2, '--interval goes with --watch only.')


def test_list_shows_the_latest_tasks_first(env, cli):
    ids = [add_task(env) for _ in range(3)]
    failed = add_task(env, 'failed', name='mail', attempts=5,
        error='ValueError: boom\nsecond line')

    result = cli('list', '--limit', '3')

    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split() == [
        'ID', 'QUEUE', 'STATE', 'CALL', 'ATTEMPTS', 'ENQUEUED', '(UTC)',
        'ERROR']
    assert [int(line.split()[0]) for line in lines[1:]] == [
        failed, ids[2], ids[1]]
    assert lines[1].split()[1:5] == [
        'mail', 'failed', 'test.log.record', '5/5']
    assert lines[1].endswith('ValueError: boom')


def test_list_filters_by_state_queue_and_model(env, cli):
    add_task(env)
    failed = add_task(env, 'failed', name='mail')
    other = add_task(env, 'failed', model='test.seed')
    add_task(env, 'failed', name='other')

    by_state = cli('list', '--state', 'failed', '--queue', 'mail',
        '--queue', 'default', '--json')
    by_model = cli('list', '--model', 'test.seed', '--json')
    nothing = cli('list', '--state', 'running')

    assert [t['id'] for t in json.loads(by_state.output)] == [
        other, failed]
    assert [t['id'] for t in json.loads(by_model.output)] == [other]
    assert nothing.output == 'No tasks match.\n'


def test_list_refuses_an_unknown_state(env, cli):
    result = cli('list', '--state', 'lost')

    assert_clean_failure(result, 2, "Invalid value for '--state'")


def test_show_prints_the_call_the_error_and_the_traceback(env, cli):
    with env.transaction(context={
            'queue_max_attempts': 1, 'language': 'fr'}):
        Log = Pool().get('test.log')
        records = Log.create([{'name': 'a'}, {'name': 'b'}])
        task_id, = Log.__queue__.fail(records, message='bad value')
        ids = [r.id for r in records]

    result = cli('show', str(task_id))

    assert result.exit_code == 0, result.output
    lines = dict(
        line.split(':', 1) for line in result.output.splitlines()
        if ':' in line and not line.startswith(' '))
    assert lines['task'].strip() == str(task_id)
    assert lines['state'].strip() == 'failed'
    assert lines['method'].strip() == 'fail'
    assert lines['instances'].strip() == repr(ids)
    assert lines['kwargs'].strip() == "{'message': 'bad value'}"
    assert lines['context'].strip() == "{'language': 'fr'}"
    assert lines['attempts'].strip() == '1 of 1'
    assert lines['error'].strip() == 'ValueError: bad value'
    assert '\ntraceback:\n  Traceback (most recent call last):' in (
        result.output)


def test_show_json_keeps_typed_arguments_and_the_result(env, cli):
    with env.transaction():
        Log = Pool().get('test.log')
        record, = Log.create([{'name': 'a'}])
        answered = Log.__queue__.answer(record)
    config.set('queue', 'worker', 'True')
    with env.transaction():
        waiting = Pool().get('test.log').__queue__.record(
            record.id, decimal.Decimal('1.50'))

    done = json.loads(cli('show', str(answered), '--json').output)
    pending = json.loads(cli('show', str(waiting), '--json').output)

    assert (done['state'], done['result']) == ('done', {'answer': 42})
    assert pending['state'] == 'pending'
    assert pending['call']['args'] == [
        {'__class__': 'Decimal', 'decimal': '1.50'}]
    assert datetime.datetime.fromisoformat(pending['enqueued_at'])


def test_show_of_an_unknown_task_is_a_clean_error(env, cli):
    result = cli('show', '999999')

    assert_clean_failure(result, 1, 'There is no task 999999')


def test_show_refuses_an_id_that_is_not_a_number(env, cli):
    result = cli('show', 'seven')

    assert_clean_failure(result, 2, "Invalid value for 'ID'")


def test_retry_makes_tasks_pending_with_attempts_reset(env, cli):
    now = utcnow()
    ids = [
        add_task(env, 'failed', attempts=5, error='ValueError: boom'),
        add_task(env, 'cancelled', attempts=1),
        add_task(env, 'scheduled', attempts=2, scheduled_at=now + DAY),
        ]

    result = cli('retry', *map(str, ids))

    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [
        f'Task {i} is pending.' for i in ids]
    tasks = read_tasks(env, ids, [
        'state', 'attempts', 'scheduled_at', 'finished_at', 'due_at'])
    assert {(t['state'], t['attempts'], t['scheduled_at'],
        t['finished_at']) for t in tasks.values()} == {
            ('pending', 0, None, None)}
    assert all(t['due_at'] >= now for t in tasks.values())


def test_retry_refuses_running_done_and_unknown_tasks(env, cli):
    running = add_task(env, 'running', attempts=1)
    done = add_task(env, 'done')
    pending = add_task(env)
    failed = add_task(env, 'failed')

    result = cli('retry', str(running), str(done), '999999', str(pending),
        str(failed))

    assert_clean_failure(result, 1, '3 of 5 task(s) left unchanged.')
    assert f'Task {running} is running: it can be retried once it has ' \
        'failed.' in result.stderr
    assert f'Task {done} is done: a finished task does not run again' in (
        result.stderr)
    assert 'Task 999999 does not exist.' in result.stderr
    assert f'Task {pending} is already pending.' in result.stdout
    states = read_tasks(env, [running, done, failed], ['state', 'attempts'])
    assert states == {
        running: {'state': 'running', 'attempts': 1},
        done: {'state': 'done', 'attempts': 0},
        failed: {'state': 'pending', 'attempts': 0}}


def test_retry_failed_takes_the_failed_tasks_of_a_queue(env, cli):
    mail = add_task(env, 'failed', name='mail')
    other = add_task(env, 'failed')
    cancelled = add_task(env, 'cancelled', name='mail')

    result = cli('retry', '--failed', '--queue', 'mail')

    assert result.exit_code == 0, result.output
    assert result.output == '1 failed task(s) pending again.\n'
    assert read_tasks(env, [mail, other, cancelled], ['state']) == {
        mail: {'state': 'pending'}, other: {'state': 'failed'},
        cancelled: {'state': 'cancelled'}}


def test_retry_leaves_a_unique_task_whose_twin_waits(env, cli):
    first = add_task(env, 'failed', unique_key='k1')
    second = add_task(env, 'failed', unique_key='k1')
    waiting_twin = add_task(env, 'failed', unique_key='k2')
    add_task(env, unique_key='k2')

    by_id = cli('retry', str(waiting_twin))
    by_state = cli('retry', '--failed')

    assert_clean_failure(by_id, 1, 'a waiting task has the same unique key')
    assert by_state.output.splitlines() == [
        '1 failed task(s) pending again.',
        '2 failed task(s) left as they are: a waiting task has the same '
        'unique key.']
    assert read_tasks(env, [first, second, waiting_twin], ['state']) == {
        first: {'state': 'pending'}, second: {'state': 'failed'},
        waiting_twin: {'state': 'failed'}}


def test_retry_failed_goes_by_batches_with_a_progress_bar(
        env, cli, monkeypatch):
    monkeypatch.setattr(queue_command, 'RETRY_BATCH', 2)
    ids = [
        add_task(env, 'failed'), add_task(env, 'failed', unique_key='k1'),
        add_task(env, 'failed')]
    # In the batch after its twin's, which is pending by then.
    twin = add_task(env, 'failed', unique_key='k1')
    ids.append(add_task(env, 'failed'))

    result = cli('retry', '--failed')

    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        '4 failed task(s) pending again.',
        '1 failed task(s) left as they are: a waiting task has the same '
        'unique key.']
    assert 'Retrying failed tasks' in result.stderr
    states = read_tasks(env, ids + [twin], ['state'])
    assert [states[i]['state'] for i in ids] == ['pending'] * 4
    assert states[twin] == {'state': 'failed'}


@pytest.mark.parametrize('args, message', [
    ([], 'Give either task IDs or --failed.'),
    (['1', '--failed'], 'Give either task IDs or --failed.'),
    (['1', '--queue', 'mail'], '--queue goes with --failed only.'),
    ])
def test_retry_needs_ids_or_failed(env, cli, args, message):
    result = cli('retry', *args)

    assert_clean_failure(result, 2, message)


def test_cancel_cancels_waiting_tasks_and_says_why_not_others(env, cli):
    now = utcnow()
    pending = add_task(env)
    scheduled = add_task(env, 'scheduled', scheduled_at=now + DAY)
    running = add_task(env, 'running')
    failed = add_task(env, 'failed')

    waiting = cli('cancel', str(pending), str(scheduled))
    refused = cli('cancel', str(running), str(failed), str(pending))

    assert waiting.exit_code == 0, waiting.output
    assert waiting.output.splitlines() == [
        f'Task {pending} is cancelled.', f'Task {scheduled} is cancelled.']
    if env.name == 'postgresql':
        # The manager of the running task is asked to stop it.
        assert_clean_failure(refused, 1, '1 of 2 task(s) left unchanged.')
        assert f'Task {running} is running: its worker was asked' \
            in refused.stdout
    else:
        assert_clean_failure(refused, 1, '2 of 3 task(s) left unchanged.')
        assert f'Task {running} is running, and only PostgreSQL can ' \
            'stop a running task.' in refused.stderr
    assert f'Task {failed} has failed' in refused.stderr
    assert f'Task {pending} is already cancelled.' in refused.stdout
    tasks = read_tasks(
        env, [pending, scheduled, running], ['state', 'finished_at'])
    assert [t['state'] for t in tasks.values()] == [
        'cancelled', 'cancelled', 'running']
    assert tasks[pending]['finished_at'] >= now
    assert tasks[running]['finished_at'] is None


def test_cancel_needs_an_id(env, cli):
    result = cli('cancel')

    assert_clean_failure(result, 2, "Missing argument 'ID...'")


def test_clean_deletes_old_finished_tasks_in_batches(
        env, cli, monkeypatch):
    monkeypatch.setattr(queue_command, 'CLEAN_BATCH', 2)
    old = utcnow() - 31 * DAY
    for state in ['done', 'done', 'failed', 'cancelled', 'done']:
        add_task(env, state, finished_at=old)
    recent = add_task(env, 'done')
    waiting = add_task(env, enqueued_at=old)

    result = cli('clean')
    everything = cli('clean', '--days', '0')

    assert result.exit_code == 0, result.output
    assert 'Deleted 5 task(s) finished before' in result.stdout
    assert 'Deleting finished tasks' in result.stderr
    assert 'Deleted 1 task(s)' in everything.stdout
    with env.transaction():
        Queue = Pool().get('ir.queue')
        assert [t.id for t in Queue.search([])] == [waiting]
        assert not Queue.search_count([('id', '=', recent)])


def test_clean_keeps_the_days_of_the_configuration(env, runner, tmp_path):
    path = env.config_file(tmp_path, queue__clean_days=40)
    kept = add_task(env, 'done', finished_at=utcnow() - 35 * DAY)

    result = runner.invoke(main, [
        'clean', '-c', path, '-d', env.database_name])

    assert result.exit_code == 0, result.output
    assert 'Deleted 0 task(s)' in result.stdout
    assert read_tasks(env, [kept], ['state']) == {kept: {'state': 'done'}}


def test_clean_refuses_negative_days(env, cli):
    result = cli('clean', '--days', '-1')

    assert_clean_failure(result, 2, "Invalid value for '--days'")


@pytest.fixture
def identities(env):
    """A worker that died and a manager alive with a child serving mail."""
    dead = Identity(env.database_name).open()
    dead.close(forget=False)
    manager = Identity(env.database_name).open()
    child = Identity(env.database_name, ['mail'], manager.id).open()
    yield dead, manager, child
    child.close()
    manager.close()


def test_workers_lists_the_processes_and_whether_alive(cli, identities):
    dead, manager, child = identities

    result = cli('workers', '--json')

    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    assert [(r['id'], r['manager'], r['queues'], r['alive'])
        for r in rows] == [
            (dead.id, None, [], False), (manager.id, None, [], True),
            (child.id, manager.id, ['mail'], True)]
    assert rows[0]['pid'] == os.getpid()
    assert datetime.datetime.fromisoformat(rows[0]['started_at'])


def test_workers_prints_a_table_of_the_living_on_demand(cli, identities):
    dead, manager, child = identities

    everything = cli('workers')
    alive = cli('workers', '--alive')

    assert everything.exit_code == alive.exit_code == 0
    header, *lines = everything.output.splitlines()
    assert header.split()[:5] == ['ID', 'HOST', 'PID', 'MANAGER', 'QUEUES']
    assert [line.split()[-1] for line in lines] == ['no', 'yes', 'yes']
    assert lines[2].split()[3:5] == [str(manager.id), 'mail']
    assert [int(line.split()[0]) for line in alive.output.splitlines()[1:]] \
        == [manager.id, child.id]


def test_workers_says_how_to_start_one_when_none_is_registered(env, cli):
    result = cli('workers', '--alive')

    assert result.exit_code == 0
    assert result.output.startswith('No worker is alive: start one with')


def test_a_missing_configuration_file_is_a_clean_error(env, runner,
        tmp_path):
    missing = str(tmp_path / 'missing.conf')

    result = runner.invoke(main, [
        '-c', missing, 'status', '-d', env.database_name])

    assert_clean_failure(result, 1, f"The configuration file {missing!r} "
        'does not exist')


def test_an_unknown_database_is_a_clean_error(env, runner, config_file):
    result = runner.invoke(main, [
        '-c', config_file, 'list', '-d', 'trytond_queue_no_such_db'])

    assert_clean_failure(result, 1, 'trytond-queue init -d '
        'trytond_queue_no_such_db')


def test_the_environment_names_the_configuration_and_database(
        env, runner, config_file):
    add_task(env)

    result = runner.invoke(main, ['status', '--json'], env={
        'TRYTOND_CONFIG': config_file,
        'TRYTOND_DATABASE_NAMES': env.database_name})

    assert result.exit_code == 0, result.output
    assert json.loads(result.output)['total']['pending'] == 1


def test_an_option_after_the_command_wins(env, runner, tmp_path):
    after = env.config_file(tmp_path)

    result = runner.invoke(main, [
        '-c', str(tmp_path / 'missing.conf'), 'status', '-c', after,
        '-d', env.database_name])

    assert result.exit_code == 0, result.output


@pytest.mark.parametrize('names, message', [
    (None, 'Give the database with -d NAME or TRYTOND_DATABASE_NAMES.'),
    ('one, two', 'TRYTOND_DATABASE_NAMES names several databases '
        '(one, two): choose one with -d NAME.'),
    ])
def test_one_database_must_be_named(env, runner, config_file, names,
        message):
    result = runner.invoke(
        main, ['-c', config_file, 'status'],
        env={'TRYTOND_DATABASE_NAMES': names})

    assert_clean_failure(result, 2, message)


def test_database_names_prefer_the_options_to_the_environment(
        monkeypatch):
    monkeypatch.setenv('TRYTOND_DATABASE_NAMES', ' one,,two ')

    assert database_names(('three',)) == ['three']
    assert database_names(()) == ['one', 'two']


def test_user_errors_become_click_exceptions():
    with pytest.raises(click.ClickException) as info:
        with user_errors():
            raise ConfigError('fix the file')

    assert info.value.message == 'fix the file'
    assert isinstance(info.value.__cause__, ConfigError)


def test_installed_entry_point_runs_and_fails_cleanly(env, tmp_path):
    path = env.config_file(tmp_path)
    add_task(env, 'failed', name='mail')

    status = subprocess.run(
        [ENTRY_POINT, '-c', path, 'status', '-d', env.database_name,
            '--json'],
        env=env.subprocess_env(), capture_output=True, text=True,
        timeout=60)
    missing = subprocess.run(
        [ENTRY_POINT, 'list', '-c', str(tmp_path / 'missing.conf'),
            '-d', env.database_name],
        env=env.subprocess_env(), capture_output=True, text=True,
        timeout=60)

    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)['queues'][0]['failed'] == 1
    assert missing.returncode == 1
    assert missing.stderr.startswith('Error: The configuration file')
    assert 'Traceback' not in missing.stderr


def test_run_runs_the_retries_due_without_workers(env, cli):
    # Without workers, the failed attempt is retried by the command.
    with env.transaction(context={'queue_max_attempts': 2}):
        Log = Pool().get('test.log')
        failing, = Log.__queue__.fail([], 'still broken')
    assert read_tasks(env, [failing], ['state'])[failing] == {
        'state': 'scheduled'}
    time.sleep(0.2)

    result = cli('run')

    assert result.exit_code == 0, result.output
    assert result.output == '0 task(s) done, 1 failed for good.\n'
    assert read_tasks(env, [failing], ['state', 'attempts'])[failing] == {
        'state': 'failed', 'attempts': 2}
