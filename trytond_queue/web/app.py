"""The web dashboard of a queue: a WSGI application for one database.

``trytond-queue web -c FILE -d DB`` serves it with werkzeug; any WSGI
server serves it too, the configuration coming from ``TRYTOND_CONFIG``::

    TRYTOND_CONFIG=/etc/trytond.conf \\
        gunicorn -b 127.0.0.1:8300 'trytond_queue.web.app:make_app("DB")'

With ``[web] password`` set, every page asks for it through a login form
that sets a signed session cookie, and ``/metrics`` also takes it as a
bearer token; ``/health`` stays open for load balancers.  Without a
password, whoever reaches the dashboard may use it: it then answers
requests made to loopback host names only, and the command refuses to
listen anywhere else.
"""
import base64
import hashlib
import hmac
import ipaddress
import json
import logging
import secrets
import socket
import time
import urllib.parse

from jinja2 import Environment, PackageLoader
from werkzeug.exceptions import (
    Forbidden,
    HTTPException,
    InternalServerError,
    ServiceUnavailable,
)
from werkzeug.middleware.shared_data import SharedDataMiddleware
from werkzeug.routing import Map, Rule
from werkzeug.utils import redirect
from werkzeug.wrappers import Request, Response

from .. import backend
from ..config import config
from ..exceptions import ConfigError
from ..pool import Pool
from ..queue.store import utcnow
from . import metrics, views

__all__ = ['make_app', 'Dashboard', 'listen_address', 'DEFAULT_LISTEN']

logger = logging.getLogger(__name__)

DEFAULT_LISTEN = '127.0.0.1:8300'
SESSION_AGE = 12 * 3600
# The key that signs the cookies is stretched from the password, so that
# a stolen cookie does not make guessing the password cheap.
KEY_ITERATIONS = 100_000
CSRF_FIELD = 'csrf_token'
OPEN_ENDPOINTS = {'login', 'health'}
# The views that open and close sessions are methods of the dashboard;
# the others live in the views module.
SESSION_ENDPOINTS = {'login', 'logout'}
# Load balancers and scrapers keep no cookies: a session opened for
# them would be lost.
MACHINE_ENDPOINTS = {'health', 'metrics'}
SECURITY_HEADERS = {
    'Content-Security-Policy': (
        "default-src 'none'; style-src 'self'; img-src 'self'; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"),
    'X-Content-Type-Options': 'nosniff',
    'X-Frame-Options': 'DENY',
    'Referrer-Policy': 'same-origin',
    'Cache-Control': 'no-store',
    }

URLS = Map([
    Rule('/', endpoint='overview', methods=['GET']),
    Rule('/tasks', endpoint='tasks', methods=['GET']),
    Rule('/tasks/<int:task_id>', endpoint='task', methods=['GET']),
    Rule('/tasks/<int:task_id>/retry', endpoint='retry', methods=['POST']),
    Rule('/tasks/<int:task_id>/cancel', endpoint='cancel',
        methods=['POST']),
    Rule('/tasks/retry-failed', endpoint='retry_failed', methods=['POST']),
    Rule('/workers', endpoint='workers', methods=['GET']),
    Rule('/login', endpoint='login', methods=['GET', 'POST']),
    Rule('/logout', endpoint='logout', methods=['POST']),
    Rule('/metrics', endpoint='metrics', methods=['GET']),
    Rule('/health', endpoint='health', methods=['GET']),
    ])


def _encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b'=').decode('ascii')


def _decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + '=' * (-len(text) % 4))


class Signer:
    """Sign and check values with a key derived from the password."""

    def __init__(self, password: str, salt: bytes):
        self.key = hashlib.pbkdf2_hmac(
            'sha256', password.encode('utf-8'), salt, KEY_ITERATIONS)

    def digest(self, text: str) -> str:
        """Return the signature of a text."""
        return _encode(hmac.digest(self.key, text.encode('utf-8'), 'sha256'))

    def dumps(self, data: dict) -> str:
        """Return the data as a signed text."""
        payload = _encode(json.dumps(data).encode('utf-8'))
        return f'{payload}.{self.digest(payload)}'

    def loads(self, text: str) -> dict | None:
        """Return the data of a signed text, or None if it was forged."""
        payload, _, signature = text.partition('.')
        if not hmac.compare_digest(
                signature.encode('ascii', 'replace'),
                self.digest(payload).encode('ascii')):
            return None
        try:
            return json.loads(_decode(payload))
        except ValueError:
            return None


def _same(given: str, expected: str) -> bool:
    return hmac.compare_digest(
        given.encode('utf-8'), expected.encode('utf-8'))


def _is_loopback_name(host: str) -> bool:
    """Tell whether a host name is loopback without asking any resolver."""
    host = host.strip('[]').lower()
    if host == 'localhost':
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _resolves_to_loopback(host: str) -> bool:
    if _is_loopback_name(host):
        return True
    try:
        infos = socket.getaddrinfo(host, None)
    except socket.gaierror as exception:
        raise ConfigError(
            f'The dashboard cannot listen on {host!r}: the name does not '
            f'resolve ({exception.strerror}).') from exception
    return all(
        ipaddress.ip_address(info[4][0]).is_loopback for info in infos)


def listen_address(bind: str | None = None) -> tuple[str, int]:
    """Return the host and port to listen on, refusing an open address.

    bind overrides ``[web] listen``.  A host that is not loopback needs
    ``[web] password``.
    """
    value = bind or config.get('web', 'listen', fallback='') or (
        DEFAULT_LISTEN)
    origin = '--bind' if bind else config.origin('web', 'listen')
    host, _, port = value.strip().rpartition(':')
    host = host.strip('[]')
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(
            f'The address {value!r} of {origin} is not HOST:PORT: write '
            'for example 127.0.0.1:8300.')
    if not _password() and not _resolves_to_loopback(host):
        raise ConfigError(
            f'The dashboard would listen on {host!r} ({origin}) without '
            'a password, so anyone reaching it could retry and cancel '
            'tasks. Set [web] password (or TRYTOND_WEB__PASSWORD), or '
            'listen on a loopback address such as 127.0.0.1:8300.')
    return host, int(port)


def _password() -> str:
    return config.get('web', 'password', fallback='') or ''


def _local_path(path: str | None) -> str:
    """Return path if it stays on this site, else the root."""
    if not path or not path.startswith('/') or path.startswith(('//', '/\\')):
        return '/'
    return path


class Dashboard:
    """The WSGI application of the dashboard of one database."""

    def __init__(self, database_name: str, password: str = ''):
        self.database_name = database_name
        self.password = password
        salt = b'trytond_queue.web:' + database_name.encode('utf-8')
        self.signer = Signer(password, salt)
        # Browsers share cookies between the ports of a host: each
        # database has its own, so that two dashboards keep apart.
        self.cookie_name = 'trytond_queue_' + hashlib.sha256(
            database_name.encode('utf-8')).hexdigest()[:12]
        self.templates = Environment(
            loader=PackageLoader(__package__, 'templates'),
            autoescape=True, trim_blocks=True, lstrip_blocks=True)
        self.templates.filters.update(views.FILTERS)
        self.registry = metrics.registry(database_name)
        self._wsgi = SharedDataMiddleware(
            self.application, {'/static': (__package__, 'static')},
            cache_timeout=3600)

    def __call__(self, environ, start_response):
        return self._wsgi(environ, start_response)

    def application(self, environ, start_response):
        """Answer a request that is not for a static file."""
        request = Request(environ)
        try:
            response = self.dispatch(request)
        except HTTPException as exception:
            response = self.error_page(request, exception)
        except Exception as exception:
            database = backend.Database(self.database_name)
            if database.is_connection_error(exception):
                logger.warning(
                    '%s: the database does not answer: %s',
                    self.database_name, exception)
                response = self.error_page(request, ServiceUnavailable(
                    'The database does not answer: check that it runs, '
                    'then reload the page.'))
            else:
                logger.critical(
                    '%s: the dashboard failed on %s %s',
                    self.database_name, request.method, request.path,
                    exc_info=True)
                response = self.error_page(request, InternalServerError())
        response.headers.extend(
            (k, v) for k, v in SECURITY_HEADERS.items()
            if k not in response.headers)
        return response(environ, start_response)

    def dispatch(self, request):
        """Route the request through the checks to its view."""
        request.urls = URLS.bind_to_environ(request.environ)
        host = urllib.parse.urlsplit('//' + request.host).hostname or ''
        if not self.password and not _is_loopback_name(host):
            # A page of another site may reach a loopback server through
            # a name of its own (DNS rebinding): without a password only
            # loopback names are served.
            raise Forbidden(
                'Without [web] password the dashboard answers requests '
                'to loopback names only, such as 127.0.0.1.')
        endpoint, values = request.urls.match()
        request.session = self._load_session(request)
        if endpoint not in OPEN_ENDPOINTS and not self._allowed(
                request, endpoint):
            response = self._refuse(request, endpoint)
        else:
            if request.method == 'POST':
                self._check_csrf(request)
            if endpoint in SESSION_ENDPOINTS:
                response = getattr(self, endpoint)(request)
            else:
                response = getattr(views, endpoint)(self, request, **values)
        if request.session.get('changed') and (
                endpoint not in MACHINE_ENDPOINTS):
            self._save_session(request, response)
        return response

    def _load_session(self, request):
        text = request.cookies.get(self.cookie_name)
        session = self.signer.loads(text) if text else None
        if (not isinstance(session, dict)
                or not isinstance(session.get('nonce'), str)
                or not isinstance(session.get('issued'), int)
                or session['issued'] + SESSION_AGE < time.time()):
            return self._new_session()
        return session

    @staticmethod
    def _new_session(authenticated=False):
        return {
            'nonce': secrets.token_hex(16), 'issued': int(time.time()),
            'authenticated': authenticated, 'changed': True}

    def _save_session(self, request, response):
        data = {k: v for k, v in request.session.items() if k != 'changed'}
        response.set_cookie(
            self.cookie_name, self.signer.dumps(data), max_age=SESSION_AGE,
            path=request.script_root or '/', secure=request.is_secure,
            httponly=True, samesite='Lax')

    def _allowed(self, request, endpoint):
        if not self.password or request.session.get('authenticated'):
            return True
        if endpoint != 'metrics':
            return False
        kind, _, token = request.headers.get(
            'Authorization', '').partition(' ')
        return kind.lower() == 'bearer' and _same(
            token.strip(), self.password)

    def _refuse(self, request, endpoint):
        if endpoint == 'metrics':
            return Response(
                'Give the [web] password as a bearer token.\n', 401,
                {'WWW-Authenticate': 'Bearer realm="trytond-queue"'},
                mimetype='text/plain')
        target = request.path
        if request.query_string:
            target += '?' + request.query_string.decode('latin-1')
        if request.method != 'GET':
            target = '/'
        return redirect(
            request.urls.build('login', {'next': target}), 303)

    def csrf_token(self, request) -> str:
        """Return the token that forms of this session must send back."""
        return self.signer.digest('csrf:' + request.session['nonce'])

    def _check_csrf(self, request):
        if not _same(
                request.form.get(CSRF_FIELD, ''), self.csrf_token(request)):
            raise Forbidden(
                'The form has expired or did not come from this '
                'dashboard: reload the page and send it again.')

    def url(self, request, endpoint, **values) -> str:
        """Return the path of an endpoint, query arguments included."""
        return request.urls.build(endpoint, values)

    def render(self, request, template, status=200, **context):
        """Return the page of a template, with what every page needs."""
        context.setdefault('now', utcnow())
        html = self.templates.get_template(template).render(
            context, database=self.database_name,
            url=lambda endpoint, **values: self.url(
                request, endpoint, **values),
            csrf_field=CSRF_FIELD,
            csrf_token=self.csrf_token(request)
            if getattr(request, 'session', None) else None,
            logout=bool(self.password) and bool(getattr(
                request, 'session', {}).get('authenticated')))
        return Response(html, status, mimetype='text/html')

    def error_page(self, request, exception):
        """Return the page of an HTTP error, or its own response."""
        if exception.code in (301, 302, 303, 307, 308):
            return exception.get_response(request.environ)
        if not hasattr(request, 'urls'):
            request.urls = URLS.bind_to_environ(request.environ)
        response = self.render(
            request, 'error.html', status=exception.code,
            error=exception, page=None)
        if exception.code == 405 and exception.valid_methods:
            response.headers['Allow'] = ', '.join(exception.valid_methods)
        return response

    def login(self, request):
        """Ask for the password and open an authenticated session."""
        target = _local_path(
            request.values.get('next') or request.args.get('next'))
        if not self.password:
            return redirect(request.script_root + target, 303)
        error = None
        if request.method == 'POST':
            if _same(request.form.get('password', ''), self.password):
                # A new nonce on login, so that a session planted
                # before it is worth nothing after.
                request.session = self._new_session(authenticated=True)
                return redirect(request.script_root + target, 303)
            logger.warning(
                '%s: wrong dashboard password from %s',
                self.database_name, request.remote_addr)
            error = 'Wrong password.'
        return self.render(
            request, 'login.html', status=401 if error else 200,
            error=error, next=target, page='login')

    def logout(self, request):
        """Close the session."""
        request.session = self._new_session()
        return redirect(request.urls.build('login'), 303)


def make_app(database_name: str, config_file: str | None = None):
    """Return the WSGI application of the dashboard of a database.

    The configuration is read from config_file, else from
    ``TRYTOND_CONFIG`` unless a file was read already.
    """
    if config_file or not config.files:
        config.update_etc(config_file)
    Pool(database_name).init(update=False)
    password = _password()
    if not password:
        logger.info(
            '%s: the dashboard has no [web] password: it serves loopback '
            'names only', database_name)
    return Dashboard(database_name, password)

