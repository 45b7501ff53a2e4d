"""Configuration read from INI files and the environment.

The object :data:`config` behaves like :class:`configparser.ConfigParser`.
An environment variable ``TRYTOND_<SECTION>__<OPTION>`` overrides the
option of the file, so that containers can be configured without a file.
"""
import configparser
import os

from .exceptions import ConfigError

__all__ = ['config', 'DEFAULTS']

DEFAULTS = {
    'database': {
        'uri': 'sqlite://',
        'path': os.path.join(os.path.expanduser('~'), 'db'),
        'retry': '5',
        'minconn': '1',
        'maxconn': '64',
        'timeout': '1800',
    },
    'pool': {
        'modules': '',
    },
    'queue': {
        'worker': 'False',
        'batch_size': '20',
        'clean_days': '30',
        'max_attempts': '5',
        'timeout': '',
        'retry_delay': '1',
        'retry_max_delay': '3600',
        'claim_size': '50',
        'grace_period': '30',
        'poll_interval': '5',
        'limits': '',
    },
    'web': {
        'listen': '127.0.0.1:8300',
        'password': '',
    },
}

_MISSING = object()


def environment_name(section: str, option: str) -> str:
    """Return the environment variable that overrides an option."""
    return f'TRYTOND_{section.upper()}__{option.upper()}'


class Configuration(configparser.ConfigParser):
    """A configuration parser that knows its files and the environment."""

    def __init__(self):
        super().__init__(interpolation=None)
        self.files = []
        self.reset()

    def reset(self):
        """Forget every file read and come back to the defaults."""
        for section in self.sections():
            self.remove_section(section)
        self.read_dict(DEFAULTS)
        self.files = []

    def update_etc(self, path: str | None = None):
        """Read the file at path, or the one of ``TRYTOND_CONFIG``."""
        path = path or os.environ.get('TRYTOND_CONFIG')
        if not path:
            return
        path = os.path.expanduser(path)
        if not os.path.isfile(path):
            raise ConfigError(
                f'The configuration file {path!r} does not exist: '
                'give the path of an existing INI file with -c '
                'or TRYTOND_CONFIG.')
        try:
            with open(path, encoding='utf-8') as fp:
                self.read_file(fp, source=path)
        except configparser.Error as exception:
            raise ConfigError(
                f'The configuration file {path!r} is malformed: '
                f'{exception.message}') from exception
        self.files.append(path)

    def _source(self) -> str:
        return ', '.join(repr(f) for f in self.files) or 'the defaults'

    def origin(self, section: str, option: str) -> str:
        """Say where the value of an option comes from, for messages."""
        name = environment_name(section, option)
        if name in os.environ:
            return f'the environment variable {name}'
        return self._source()

    def get(self, section, option, *args, raw=False, vars=None,
            fallback=_MISSING, **kwargs):
        """Return an option, the environment overriding the files."""
        value = os.environ.get(environment_name(section, option))
        if value is not None:
            return value
        if fallback is _MISSING:
            try:
                return super().get(section, option, raw=True, vars=vars)
            except (configparser.NoSectionError,
                    configparser.NoOptionError) as exception:
                raise ConfigError(
                    f'The option [{section}] {option} is missing from '
                    f'{self._source()}.') from exception
        return super().get(
            section, option, raw=True, vars=vars, fallback=fallback)

    def _convert(self, section, option, convert, kind, fallback):
        value = self.get(section, option, fallback=None)
        if value is None or value.strip() == '':
            if fallback is _MISSING:
                return None
            return fallback
        try:
            return convert(value.strip())
        except ValueError as exception:
            raise ConfigError(
                f'The option [{section}] {option} = {value!r} in '
                f'{self.origin(section, option)} is not {kind}.'
                ) from exception

    def getint(self, section, option, *args, fallback=_MISSING, **kwargs):
        """Return an option as an integer; None when it is empty."""
        return self._convert(section, option, int, 'an integer', fallback)

    def getfloat(self, section, option, *args, fallback=_MISSING,
                 **kwargs):
        """Return an option as a float; None when it is empty."""
        return self._convert(section, option, float, 'a number', fallback)

    def getboolean(self, section, option, *args, fallback=_MISSING,
                   **kwargs):
        """Return an option as a boolean (1/0, yes/no, true/false, on/off)."""
        return self._convert(
            section, option, _to_boolean,
            'a boolean (true/false, yes/no, 1/0, on/off)', fallback)

    def getlist(self, section, option) -> list[str]:
        """Return an option as a list split on commas and white space."""
        value = self.get(section, option, fallback='') or ''
        return [v for v in value.replace(',', ' ').split() if v]


def _to_boolean(value):
    states = configparser.ConfigParser.BOOLEAN_STATES
    if value.lower() not in states:
        raise ValueError(value)
    return states[value.lower()]


config = Configuration()
