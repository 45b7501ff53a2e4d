"""The dashboard driven by a real headless Chromium, through selenium.

The test needs Debian's chromium and chromium-driver; it is skipped,
saying so, where they are not installed.  It saves a screenshot of each
main page into test-artifacts/web/ for a person to look at.
"""
import datetime
import math
import os
import threading

import pytest
from werkzeug.serving import make_server

from trytond_queue.config import config
from trytond_queue.pool import Pool
from trytond_queue.queue.identity import Identity
from trytond_queue.queue.store import utcnow
from trytond_queue.web import app as web_app
from trytond_queue.web.app import make_app

from .conftest import ROOT

CHROMIUM = '/usr/bin/chromium'
CHROMEDRIVER = '/usr/bin/chromedriver'
CHROMIUM_FLAGS = [
    '--headless', '--no-sandbox', '--disable-gpu',
    '--disable-background-networking', '--disable-component-update',
    '--disable-sync', '--no-first-run', '--window-size=1400,900',
    ]
ARTIFACTS = os.path.join(ROOT, 'test-artifacts', 'web')
PASSWORD = 'correct horse'
SCRIPT = '<script>window.owned = true</script>'
MINUTE = datetime.timedelta(minutes=1)

pytestmark = [
    pytest.mark.skipif(
        not os.path.exists(CHROMIUM) or not os.path.exists(CHROMEDRIVER),
        reason=f'the browser test needs {CHROMIUM} and {CHROMEDRIVER}: '
        'apt-get install chromium chromium-driver'),
    pytest.mark.timeout(60),
    ]


@pytest.fixture
def browser():
    """A headless Chromium driven through chromedriver."""
    webdriver = pytest.importorskip(
        'selenium.webdriver',
        reason='the browser test needs selenium: pip install selenium')
    from selenium.webdriver.chrome.service import Service
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    driver = webdriver.Chrome(
        options=options, service=Service(executable_path=CHROMEDRIVER))
    driver.implicitly_wait(0)
    yield driver
    driver.quit()


@pytest.fixture
def server(env, monkeypatch):
    """The dashboard served on a free loopback port; its base URL."""
    monkeypatch.delenv('TRYTOND_CONFIG', raising=False)
    monkeypatch.setattr(web_app, 'KEY_ITERATIONS', 1000)
    config.set('web', 'password', PASSWORD)
    httpd = make_server('127.0.0.1', 0, make_app(env.database_name),
        threaded=True)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f'http://127.0.0.1:{httpd.server_port}'
    httpd.shutdown()
    thread.join(5)


def populate(env):
    """Fill the queue as a busy hour would; return the ids to look at."""
    now = utcnow()
    rows = []

    def row(name, state, method='record', **values):
        data = {
            'model': 'test.log', 'method': method, 'instances': [1],
            'args': [], 'kwargs': {}, 'user': 0, 'context': {}}
        values.setdefault('enqueued_at', now)
        values.setdefault('finished_at', now if state in (
            'done', 'failed', 'cancelled') else None)
        rows.append(dict({
            'name': name, 'model': 'test.log', 'method': method,
            'data': data, 'state': state, 'priority': 0,
            'due_at': values['enqueued_at'], 'attempts': 1,
            'max_attempts': 5}, **values))

    for minute in range(60):
        # A day's rhythm squeezed into an hour, with a burst of errors.
        finished = now - (59 - minute) * MINUTE
        for _ in range(int(6 + 5 * math.sin(minute / 6))):
            row('default', 'done', finished_at=finished,
                enqueued_at=finished - MINUTE / 30,
                dequeued_at=finished - MINUTE / 60)
        if 38 <= minute <= 41:
            row('mail', 'failed', method='fail', finished_at=finished,
                error='SMTPServerDisconnected: Connection unexpectedly '
                'closed')
        if minute % 3 == 0:
            row('mail', 'done', finished_at=finished,
                enqueued_at=finished - MINUTE, dequeued_at=finished)
    for _ in range(12):
        row('default', 'pending', enqueued_at=now - 7 * MINUTE)
    for _ in range(3):
        row('reports', 'running', expected_at=now - 5 * MINUTE,
            dequeued_at=now - 9 * MINUTE)
    row('reports', 'scheduled', scheduled_at=now + 30 * MINUTE)
    row('mail', 'cancelled')
    with env.transaction():
        Pool().get('ir.queue').create(rows)
    with env.transaction(context={
            'queue_max_attempts': 1, 'queue_name': 'mail'}):
        Log = Pool().get('test.log')
        record, = Log.create([{'name': 'invoice 42'}])
        failed, = Log.__queue__.fail([record], message='no such address')
    config.set('queue', 'worker', 'True')
    with env.transaction():
        hostile, = Pool().get('test.log').__queue__.record(
            [record], SCRIPT)
    return failed, hostile


def shoot(driver, name):
    """Save a screenshot of the whole page under test-artifacts."""
    os.makedirs(ARTIFACTS, exist_ok=True)
    size = driver.execute_cdp_cmd('Page.getLayoutMetrics', {})
    height = math.ceil(size['cssContentSize']['height'])
    # The viewport is stretched to the page, so that one image shows
    # all of it.
    driver.execute_cdp_cmd('Emulation.setDeviceMetricsOverride', {
        'width': 1400, 'height': min(height, 4000),
        'deviceScaleFactor': 1, 'mobile': False})
    path = os.path.join(ARTIFACTS, f'{name}.png')
    try:
        driver.save_screenshot(path)
    finally:
        driver.execute_cdp_cmd('Emulation.clearDeviceMetricsOverride', {})
    return path


def submit(driver, selector):
    """Click a submit button and wait for the page that answers."""
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.wait import WebDriverWait
    button = driver.find_element(By.CSS_SELECTOR, selector)
    button.click()
    # While the page is replaced, Chromium may answer with an inspector
    # error instead of a stale element: look again until it is stale.
    WebDriverWait(driver, 10, ignored_exceptions=(WebDriverException,)
        ).until(expected_conditions.staleness_of(button))


def test_an_operator_finds_and_retries_a_failed_task(
        env, server, browser):
    from selenium.webdriver.common.by import By
    failed, hostile = populate(env)
    manager = Identity(env.database_name, queues=['mail', 'reports']).open()
    workers = [
        Identity(env.database_name, queues=['mail', 'reports'],
            manager=manager.id).open()
        for _ in range(2)]

    def text(selector):
        return browser.find_element(By.CSS_SELECTOR, selector).text

    try:
        browser.get(server + '/')
        assert browser.current_url.startswith(server + '/login')
        shoot(browser, '1-login')
        browser.find_element(By.NAME, 'password').send_keys('wrong')
        submit(browser, 'form .button')
        assert text('.notice.error') == 'Wrong password.'
        browser.find_element(By.NAME, 'password').send_keys(PASSWORD)
        submit(browser, 'form .button')

        assert browser.current_url == server + '/'
        assert text('.tile-pending .value') == '13'
        assert text('.tile-running .value') == '3'
        assert text('.tile-failed .value') == '5'
        assert 'Overdue\n3' in text('.tiles')
        shoot(browser, '2-overview')

        browser.find_element(By.CSS_SELECTOR, '.tile-failed').click()
        rows = browser.find_elements(By.CSS_SELECTOR, 'table.tasks tbody tr')
        assert len(rows) == 5
        shoot(browser, '3-failed-tasks')
        browser.find_element(
            By.CSS_SELECTOR, f'a[href="/tasks/{failed}"]').click()

        assert 'Traceback (most recent call last)' in text('pre.traceback')
        assert 'ValueError: no such address' in text('pre.error-text')
        assert text('h1 .state') == 'failed'
        shoot(browser, '4-failed-task')
        submit(browser, 'form[action$="/retry"] button')

        assert text('h1 .state') == 'pending'
        assert 'pending again' in text('.notice.ok')
        shoot(browser, '5-retried-task')

        browser.get(f'{server}/tasks/{hostile}')
        assert SCRIPT in text('dl.fields')
        assert browser.execute_script('return window.owned') is None
        shoot(browser, '6-task-with-markup')

        browser.get(server + '/workers')
        assert text('table.workers').count('mail, reports') == 3
        # The test process may hold a worker of its own, for the tasks
        # it ran at commit in earlier tests.
        alive = int(text('.heading').split()[-3])
        assert alive >= 3
        shoot(browser, '7-workers')

        browser.delete_all_cookies()
        browser.get(server + '/tasks')
        assert browser.current_url.startswith(server + '/login')
    finally:
        for identity in workers + [manager]:
            identity.close()
