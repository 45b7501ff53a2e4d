"""The web dashboard, /metrics and /health, through werkzeug's client."""
import datetime
import html
import re

import pytest
from click.testing import CliRunner
from prometheus_client.parser import text_string_to_metric_families
from werkzeug.test import Client

from trytond_queue import backend
from trytond_queue.commands.queue import main
from trytond_queue.config import config
from trytond_queue.exceptions import ConfigError
from trytond_queue.pool import Pool
from trytond_queue.queue.identity import Identity
from trytond_queue.queue.store import utcnow
from trytond_queue.web import app as web_app
from trytond_queue.web import queries
from trytond_queue.web.app import listen_address, make_app

from .tasks import add_task

PASSWORD = 'correct horse'
SCRIPT = '<script>alert("owned")</script>'
SECOND = datetime.timedelta(seconds=1)


@pytest.fixture
def dashboard(env, monkeypatch):
    """The dashboard of the test database, with a password."""
    monkeypatch.delenv('TRYTOND_CONFIG', raising=False)
    monkeypatch.setattr(web_app, 'KEY_ITERATIONS', 1000)
    config.set('web', 'password', PASSWORD)
    return make_app(env.database_name)


@pytest.fixture
def client(dashboard):
    return Client(dashboard)


@pytest.fixture
def logged_in(client):
    response = login(client)
    assert response.status_code == 303, response.text
    return client


def csrf_token(response):
    match = re.search(r'name="csrf_token" value="([^"]+)"', response.text)
    assert match, response.text
    return match.group(1)


def login(client, password=PASSWORD, next_='/'):
    token = csrf_token(client.get('/login'))
    return client.post('/login', data={
        'password': password, 'csrf_token': token, 'next': next_})


def post(client, path, page='/', **data):
    """Post to a path that no form offers, with the token of a page."""
    data.setdefault('csrf_token', csrf_token(client.get(page)))
    return client.post(path, data=data)


def submit(client, page, action, **where):
    """Send the form of a page that posts to action, as a browser would.

    Among several such forms, the one whose hidden fields hold where.
    """
    pattern = (
        '<form method="post" action="' + re.escape(action)
        + '"[^>]*>(.*?)</form>')
    forms = re.findall(pattern, client.get(page).text, re.S)
    for form in forms:
        fields = {
            name: html.unescape(value) for name, value in re.findall(
                r'<input type="hidden" name="([^"]+)" value="([^"]*)">',
                form)}
        if where.items() <= fields.items():
            return client.post(action, data=fields)
    raise AssertionError(f'{page} has no form to {action} with {where}')


def state_of(env, task_id):
    with env.transaction():
        task, = Pool().get('ir.queue').read([task_id], ['state'])
    return task['state']


def failed_task(env):
    """Run a task that fails for good at commit; return its id."""
    with env.transaction(context={'queue_max_attempts': 1}):
        Log = Pool().get('test.log')
        record, = Log.create([{'name': 'a'}])
        task_id, = Log.__queue__.fail([record], message='bad value')
    return task_id


@pytest.mark.parametrize('path', ['/', '/tasks', '/tasks/1', '/workers'])
def test_pages_send_to_the_login_without_a_session(client, path):
    response = client.get(path)

    assert response.status_code == 303
    assert response.location == '/login?next=' + path


def test_an_action_without_a_session_changes_nothing(env, client):
    task_id = add_task(env, 'failed')

    response = client.post(f'/tasks/{task_id}/retry')

    assert response.status_code == 303
    assert response.location.startswith('/login')
    assert state_of(env, task_id) == 'failed'


def test_a_wrong_password_is_refused(client):
    response = login(client, password='wrong')

    assert response.status_code == 401
    assert 'Wrong password.' in response.text
    assert client.get('/').status_code == 303


def test_the_password_opens_the_dashboard_at_the_page_asked(env, client):
    add_task(env, name='mail')

    response = login(client, next_='/tasks?queue=mail')

    assert response.status_code == 303
    assert response.location == '/tasks?queue=mail'
    page = client.get('/')
    assert page.status_code == 200
    assert '>mail</a>' in page.text


def test_the_login_sends_back_to_local_pages_only(client):
    response = login(client, next_='//evil.example/')

    assert response.location == '/'


def test_a_forged_session_cookie_is_no_session(dashboard, logged_in):
    cookie = logged_in.get_cookie(dashboard.cookie_name)
    payload, signature = cookie.value.split('.')
    forged = Client(dashboard)
    forged.set_cookie(dashboard.cookie_name, payload + '.x' + signature)

    assert logged_in.get('/').status_code == 200
    assert forged.get('/').status_code == 303


def test_logout_ends_the_session(logged_in):
    response = submit(logged_in, '/', '/logout')

    assert response.status_code == 303
    assert logged_in.get('/').status_code == 303


@pytest.mark.parametrize('token', [None, '', 'forged'])
def test_an_action_without_its_token_is_refused(env, logged_in, token):
    task_id = add_task(env, 'failed')
    data = {} if token is None else {'csrf_token': token}

    response = logged_in.post(f'/tasks/{task_id}/retry', data=data)

    assert response.status_code == 403
    assert 'reload the page' in response.text
    assert state_of(env, task_id) == 'failed'


def test_the_token_of_another_session_is_refused(env, dashboard, logged_in):
    task_id = add_task(env, 'failed')
    other = Client(dashboard)
    login(other)
    token = csrf_token(other.get('/'))

    response = logged_in.post(
        f'/tasks/{task_id}/retry', data={'csrf_token': token})

    assert response.status_code == 403
    assert state_of(env, task_id) == 'failed'


def test_retry_makes_a_failed_task_pending_again(env, logged_in):
    task_id = failed_task(env)

    response = submit(
        logged_in, f'/tasks/{task_id}', f'/tasks/{task_id}/retry')

    assert response.status_code == 303
    assert response.location == f'/tasks/{task_id}?notice=retried'
    with env.transaction():
        task, = Pool().get('ir.queue').read(
            [task_id], ['state', 'attempts'])
    assert (task['state'], task['attempts']) == ('pending', 0)
    page = logged_in.get(response.location)
    assert 'The task is pending again' in page.text


def test_retry_of_a_running_task_says_why_not(env, logged_in):
    task_id = add_task(env, 'running', attempts=1)

    response = post(logged_in, f'/tasks/{task_id}/retry')
    page = logged_in.get(response.location)

    assert state_of(env, task_id) == 'running'
    assert 'The task is running: it can be retried once it has failed.' in (
        page.text)


def test_cancel_cancels_a_pending_task_and_refuses_a_done_one(
        env, logged_in):
    pending = add_task(env)
    done = add_task(env, 'done')

    cancelled = submit(
        logged_in, f'/tasks/{pending}', f'/tasks/{pending}/cancel')
    refused = post(logged_in, f'/tasks/{done}/cancel')

    assert cancelled.location == f'/tasks/{pending}?notice=cancelled'
    assert state_of(env, pending) == 'cancelled'
    assert state_of(env, done) == 'done'
    assert 'there is nothing left to cancel' in logged_in.get(
        refused.location).text


def test_cancel_of_a_running_task_asks_its_worker_where_it_can(
        env, logged_in):
    task_id = add_task(env, 'running', attempts=1)

    page = logged_in.get(f'/tasks/{task_id}').text
    response = post(logged_in, f'/tasks/{task_id}/cancel')
    notice = logged_in.get(response.location).text

    assert state_of(env, task_id) == 'running'
    if env.name == 'postgresql':
        assert f'action="/tasks/{task_id}/cancel"' in page
        assert 'its worker was asked to roll it back' in notice
    else:
        assert f'action="/tasks/{task_id}/cancel"' not in page
        assert 'only PostgreSQL can stop a running task' in notice


def test_an_action_on_an_unknown_task_is_not_found(logged_in):
    assert post(logged_in, '/tasks/999999/retry').status_code == 404
    assert logged_in.get('/tasks/999999').status_code == 404


def test_bulk_retry_takes_the_failed_tasks_of_a_queue(env, logged_in):
    mail = [add_task(env, 'failed', name='mail') for _ in range(2)]
    other = add_task(env, 'failed')

    response = submit(logged_in, '/', '/tasks/retry-failed', queue='mail')

    assert response.location == '/?notice=bulk&retried=2&left=0'
    assert [state_of(env, i) for i in mail] == ['pending', 'pending']
    assert state_of(env, other) == 'failed'
    assert '2 failed task(s) pending again.' in logged_in.get(
        response.location).text


def test_task_arguments_are_shown_as_text(env, logged_in):
    config.set('queue', 'worker', 'True')
    with env.transaction():
        Log = Pool().get('test.log')
        record, = Log.create([{'name': 'a'}])
        task_id, = Log.__queue__.record([record], SCRIPT, note=SCRIPT)
    add_task(env, 'failed', error=SCRIPT)

    task_page = logged_in.get(f'/tasks/{task_id}').text
    list_page = logged_in.get('/tasks').text

    for text in (task_page, list_page):
        assert '<script' not in text
    assert '&lt;script&gt;alert(&#34;owned&#34;)&lt;/script&gt;' in (
        task_page)
    assert '&lt;script&gt;' in list_page


def test_the_task_page_shows_the_call_the_error_and_the_traceback(
        env, logged_in):
    task_id = failed_task(env)

    page = logged_in.get(f'/tasks/{task_id}')

    assert page.status_code == 200
    assert 'test.log.fail' in page.text
    assert '{&#39;message&#39;: &#39;bad value&#39;}' in page.text
    assert 'ValueError: bad value' in page.text
    assert 'Traceback (most recent call last)' in page.text
    assert f'action="/tasks/{task_id}/retry"' in page.text
    assert f'action="/tasks/{task_id}/cancel"' not in page.text


def test_the_overview_counts_the_tasks_of_each_queue(env, logged_in):
    now = utcnow()
    for state in ['pending', 'pending', 'failed', 'done']:
        add_task(env, state, name='mail')
    add_task(env, 'running', name='reports',
        expected_at=now - datetime.timedelta(hours=1))

    page = logged_in.get('/').text

    assert re.search(
        r'href="/tasks\?queue=mail&amp;state=pending"[^>]*>2</a>', page)
    assert re.search(
        r'href="/tasks\?queue=mail&amp;state=failed"[^>]*>1</a>', page)
    row = page[page.index('>reports</a>'):]
    row = row[:row.index('</tr>')]
    assert '<td class="num warn">1</td>' in row
    assert '1 done' in page and '1 failed' in page


def test_the_overview_of_an_empty_database_says_so(logged_in):
    page = logged_in.get('/')

    assert page.status_code == 200
    assert 'No tasks yet' in page.text


def test_throughput_counts_each_task_in_the_minute_it_finished(env):
    now = utcnow().replace(second=30, microsecond=0)
    minute = datetime.timedelta(minutes=1)
    for ago in [0, 5, 5, 59]:
        add_task(env, 'done', finished_at=now - ago * minute)
    add_task(env, 'failed', finished_at=now - 5 * minute)
    add_task(env, 'done', finished_at=now - 61 * minute)
    add_task(env, 'cancelled', finished_at=now)

    with env.transaction(readonly=True) as transaction:
        series = queries.throughput(transaction.connection.cursor(), now)

    done, failed = series['default']['done'], series['default']['failed']
    assert (done[59], done[54], done[0], sum(done)) == (1, 2, 1, 4)
    assert (failed[54], sum(failed)) == (1, 1)


def test_the_task_list_filters_and_pages_by_id(env, logged_in):
    ids = [add_task(env, 'failed', name='mail') for _ in range(55)]
    add_task(env, 'done', name='mail')
    add_task(env, 'failed')

    first = logged_in.get('/tasks?queue=mail&state=failed')
    older = re.search(r'href="([^"]+)">Older', first.text).group(1)
    second = logged_in.get(older.replace('&amp;', '&'))
    newer = re.search(r'href="([^"]+)">. Newer', second.text).group(1)

    def shown(page):
        return [int(i) for i in re.findall(
            r'<td class="num"><a href="/tasks/(\d+)">', page.text)]
    assert shown(first) == ids[::-1][:50]
    assert 'Newer' not in first.text
    assert shown(second) == ids[::-1][50:]
    assert 'Older' not in second.text
    assert shown(logged_in.get(newer.replace('&amp;', '&'))) == (
        ids[::-1][:50])


def test_an_unknown_page_is_not_found(logged_in):
    response = logged_in.get('/nowhere')

    assert response.status_code == 404
    assert 'Back to the overview' in response.text


def test_the_task_list_refuses_an_unknown_state(logged_in):
    response = logged_in.get('/tasks?state=lost')

    assert response.status_code == 400
    assert 'There is no state' in response.text


def test_the_workers_page_shows_the_live_workers(env, logged_in):
    identity = Identity(env.database_name, queues=['mail']).open()
    try:
        page = logged_in.get('/workers').text
    finally:
        identity.close()

    assert '1 process alive' in page
    assert f'<td class="num">{identity.id}</td>' in page
    assert '<td>mail</td>' in page
    assert 'No worker is alive' in logged_in.get('/workers').text


def test_metrics_need_the_password_as_a_bearer_token(client):
    refused = client.get('/metrics')
    wrong = client.get(
        '/metrics', headers={'Authorization': 'Bearer wrong'})
    allowed = client.get(
        '/metrics', headers={'Authorization': f'Bearer {PASSWORD}'})

    assert refused.status_code == wrong.status_code == 401
    assert refused.headers['WWW-Authenticate'].startswith('Bearer')
    assert allowed.status_code == 200
    assert allowed.content_type.startswith('text/plain')


def _samples(text):
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples}


def test_metrics_count_the_tasks_and_their_durations(env, logged_in):
    now = utcnow()
    for _ in range(2):
        add_task(env, name='mail')
    add_task(env, 'failed', name='mail', attempts=3, rescues=1)
    for _ in range(3):
        add_task(env, 'done', enqueued_at=now - 10 * SECOND,
            dequeued_at=now - 9.8 * SECOND, finished_at=now - 7.8 * SECOND)
    # Finished before the last hour: counted, but not in the histograms.
    add_task(env, 'done', enqueued_at=now - 7200 * SECOND,
        dequeued_at=now - 7100 * SECOND, finished_at=now - 7000 * SECOND)

    samples = _samples(logged_in.get('/metrics').text)

    def value(name, **labels):
        return samples[(name, tuple(sorted(labels.items())))]
    assert value('trytond_queue_tasks', queue='mail', state='pending') == 2
    assert value('trytond_queue_tasks', queue='mail', state='running') == 0
    assert value('trytond_queue_tasks_failed_total', queue='mail') == 1
    assert value('trytond_queue_tasks_done_total', queue='default') == 4
    assert value('trytond_queue_tasks_retried_total', queue='mail') == 2
    assert value('trytond_queue_tasks_rescued_total', queue='mail') == 1
    assert value('trytond_queue_oldest_pending_age_seconds',
        queue='mail') >= 0
    assert value('trytond_queue_run_seconds_bucket',
        queue='default', le='1.0') == 0
    assert value('trytond_queue_run_seconds_bucket',
        queue='default', le='2.5') == 3
    assert value('trytond_queue_run_seconds_count', queue='default') == 3
    assert value('trytond_queue_run_seconds_sum',
        queue='default') == pytest.approx(6, abs=0.01)
    assert value('trytond_queue_wait_seconds_bucket',
        queue='default', le='0.1') == 0
    assert value('trytond_queue_wait_seconds_bucket',
        queue='default', le='0.25') == 3
    assert value('trytond_queue_workers') == 0


def test_health_answers_ok_without_a_password(client):
    response = client.get('/health')

    assert (response.status_code, response.text) == (200, 'ok')
    assert 'Set-Cookie' not in response.headers


def test_health_answers_503_when_the_database_does_not(
        env, dashboard, tmp_path):
    if env.name == 'sqlite':
        config.set('database', 'path', str(tmp_path))
    else:
        config.set('database', 'uri', 'postgresql://postgres@127.0.0.1:1/')
    try:
        response = Client(dashboard).get('/health')
    finally:
        backend.forget_databases(env.database_name)

    assert response.status_code == 503


def test_without_a_password_only_loopback_names_are_served(
        env, monkeypatch):
    monkeypatch.delenv('TRYTOND_CONFIG', raising=False)
    dashboard = make_app(env.database_name)

    local = Client(dashboard).get('/', base_url='http://127.0.0.1:8300/')
    rebound = Client(dashboard).get('/', base_url='http://evil.example/')
    login_page = Client(dashboard).get('/login')

    assert local.status_code == 200
    assert 'Log out' not in local.text
    assert rebound.status_code == 403
    assert login_page.status_code == 303


def test_pages_forbid_framing_and_foreign_content(logged_in):
    headers = logged_in.get('/').headers

    assert "frame-ancestors 'none'" in headers['Content-Security-Policy']
    assert "script-src" not in headers['Content-Security-Policy']
    assert headers['X-Content-Type-Options'] == 'nosniff'


def test_the_style_sheet_is_served(client):
    response = client.get('/static/dashboard.css')

    assert response.status_code == 200
    assert '.state-failed' in response.text


@pytest.mark.parametrize('bind, password, expected', [
    (None, '', ('127.0.0.1', 8300)),
    ('localhost:9000', '', ('localhost', 9000)),
    ('[::1]:9000', '', ('::1', 9000)),
    ('0.0.0.0:9000', 'secret', ('0.0.0.0', 9000)),
    ])
def test_listen_address_reads_the_bind(env, bind, password, expected):
    config.set('web', 'password', password)

    assert listen_address(bind) == expected


@pytest.mark.parametrize('bind, message', [
    ('0.0.0.0:8300', 'without a password'),
    ('192.0.2.1:8300', 'without a password'),
    ('127.0.0.1', 'is not HOST:PORT'),
    ('127.0.0.1:99999', 'is not HOST:PORT'),
    ])
def test_listen_address_refuses_open_or_malformed_addresses(
        env, bind, message):
    with pytest.raises(ConfigError, match=message):
        listen_address(bind)


def test_the_web_command_refuses_a_public_address_without_password(
        env, tmp_path):
    config_file = env.config_file(tmp_path, web__listen='0.0.0.0:8300')
    runner = CliRunner(env={
        'TRYTOND_CONFIG': None, 'TRYTOND_DATABASE_NAMES': None})

    result = runner.invoke(
        main, ['-c', config_file, 'web', '-d', env.database_name])
    helped = runner.invoke(main, ['web', '--help'])

    assert result.exit_code == 1, result.output
    assert 'Set [web] password' in result.output
    assert 'Traceback' not in result.output
    assert helped.exit_code == 0
    assert '--bind HOST:PORT' in helped.output
