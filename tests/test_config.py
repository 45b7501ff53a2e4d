"""The configuration: INI files, environment overrides and clear errors."""
import os

import pytest

from trytond_queue import backend
from trytond_queue.config import config, environment_name
from trytond_queue.exceptions import ConfigError


@pytest.fixture(autouse=True)
def clean_config(monkeypatch):
    """Start from the defaults, without TRYTOND_ variables, and end so."""
    for name in list(os.environ):
        if name.startswith('TRYTOND_'):
            monkeypatch.delenv(name)
    config.reset()
    yield
    config.reset()


def write(tmp_path, text, name='trytond.conf'):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_defaults_apply_without_a_file():
    assert config.get('database', 'uri') == 'sqlite://'
    assert config.getboolean('queue', 'worker') is False
    assert config.getint('queue', 'batch_size') == 20
    assert config.getint('queue', 'timeout') is None


def test_file_values_replace_the_defaults(tmp_path):
    config.update_etc(write(tmp_path, (
        '[database]\n'
        'uri = postgresql://user@db:5432/\n'
        '[queue]\n'
        'worker = yes\n'
        'retry_delay = 0.5\n'
        '[pool]\n'
        'modules = a.b, c\n  d\n')))
    assert config.get('database', 'uri') == 'postgresql://user@db:5432/'
    assert config.getboolean('queue', 'worker') is True
    assert config.getfloat('queue', 'retry_delay') == 0.5
    assert config.getlist('pool', 'modules') == ['a.b', 'c', 'd']
    # Options absent from the file keep their defaults.
    assert config.getint('queue', 'max_attempts') == 5


def test_trytond_config_names_the_file_to_read(tmp_path, monkeypatch):
    monkeypatch.setenv(
        'TRYTOND_CONFIG', write(tmp_path, '[queue]\nbatch_size = 7\n'))
    config.update_etc()
    assert config.getint('queue', 'batch_size') == 7


def test_environment_overrides_the_file(tmp_path, monkeypatch):
    config.update_etc(write(tmp_path, '[database]\nuri = sqlite://\n'))
    monkeypatch.setenv(
        'TRYTOND_DATABASE__URI', 'postgresql://postgres@127.0.0.1/')
    monkeypatch.setenv('TRYTOND_QUEUE__WORKER', 'true')
    assert environment_name('database', 'uri') == 'TRYTOND_DATABASE__URI'
    assert config.get('database', 'uri') == (
        'postgresql://postgres@127.0.0.1/')
    assert config.getboolean('queue', 'worker') is True
    assert backend.name() == 'postgresql'


def test_an_empty_environment_value_means_none(monkeypatch):
    monkeypatch.setenv('TRYTOND_QUEUE__MAX_ATTEMPTS', '')
    assert config.getint('queue', 'max_attempts') is None
    assert config.getint('queue', 'max_attempts', fallback=3) == 3


def test_missing_file_is_an_error_naming_it(tmp_path):
    path = str(tmp_path / 'absent.conf')
    with pytest.raises(ConfigError) as info:
        config.update_etc(path)
    assert path in info.value.message
    assert 'does not exist' in info.value.message


def test_malformed_file_is_an_error_naming_it(tmp_path):
    path = write(tmp_path, 'uri = sqlite://\n', name='broken.conf')
    with pytest.raises(ConfigError) as info:
        config.update_etc(path)
    assert 'broken.conf' in info.value.message
    assert 'malformed' in info.value.message
    assert config.files == []


def test_duplicate_option_is_an_error_naming_the_file(tmp_path):
    path = write(tmp_path, '[queue]\nworker = 1\nworker = 0\n')
    with pytest.raises(ConfigError, match='trytond.conf.*worker'):
        config.update_etc(path)


def test_unknown_backend_is_an_error_naming_section_and_option(tmp_path):
    path = write(tmp_path, '[database]\nuri = mysql://localhost/\n')
    config.update_etc(path)
    with pytest.raises(ConfigError) as info:
        backend.name()
    message = info.value.message
    assert '[database] uri' in message
    assert "'mysql'" in message
    assert 'sqlite://' in message and 'postgresql://' in message
    assert path in message


def test_unknown_backend_from_the_environment_names_the_variable(
        monkeypatch):
    monkeypatch.setenv('TRYTOND_DATABASE__URI', 'oracle://')
    with pytest.raises(ConfigError, match='TRYTOND_DATABASE__URI'):
        backend.Database('any')


def test_bad_integer_is_an_error_naming_the_option_and_file(tmp_path):
    path = write(tmp_path, '[queue]\nbatch_size = twenty\n')
    config.update_etc(path)
    with pytest.raises(ConfigError) as info:
        config.getint('queue', 'batch_size')
    message = info.value.message
    assert "[queue] batch_size = 'twenty'" in message
    assert path in message
    assert 'integer' in message


def test_bad_boolean_is_an_error_naming_the_variable(monkeypatch):
    monkeypatch.setenv('TRYTOND_QUEUE__WORKER', 'maybe')
    with pytest.raises(ConfigError) as info:
        config.getboolean('queue', 'worker')
    message = info.value.message
    assert "[queue] worker = 'maybe'" in message
    assert 'TRYTOND_QUEUE__WORKER' in message
    assert 'true/false' in message


def test_missing_option_without_fallback_is_an_error_naming_it():
    with pytest.raises(ConfigError, match=r'\[nowhere\] nothing'):
        config.get('nowhere', 'nothing')
    assert config.get('nowhere', 'nothing', fallback='x') == 'x'


def test_reset_forgets_the_files(tmp_path):
    config.update_etc(write(tmp_path, '[queue]\nbatch_size = 3\n'))
    config.reset()
    assert config.files == []
    assert config.getint('queue', 'batch_size') == 20
