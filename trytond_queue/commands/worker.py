"""``trytond-worker``: run the tasks of the queue, as Tryton's command."""
import os

import click

from .. import backend
from ..config import config
from ..exceptions import ConfigError
from ..pool import Pool
from ..queue.limits import configured_limits
from ..worker import logs
from ..worker.manager import Manager
from .common import database_names, load_config, user_errors

__all__ = ['main']


def _check(config_file, names):
    """Refuse to start, saying how to fix it, unless all is ready."""
    if not config.getboolean('queue', 'worker', fallback=False):
        source = config_file or 'the configuration'
        raise ConfigError(
            f'[queue] worker is not true in {source}: tasks run at '
            'commit in this setup. Set "worker = True" in the [queue] '
            'section (or TRYTOND_QUEUE__WORKER=True) to run workers.')
    if not names:
        raise ConfigError(
            'No database to serve: give -d NAME or set '
            'TRYTOND_DATABASE_NAMES.')
    configured_limits()
    for name in names:
        Pool(name).init(update=False)
    backend.forget_databases()


def _seconds(option, default, zero_allowed=False):
    """Return a number of seconds of [queue], refusing a negative one."""
    value = config.getfloat('queue', option, fallback=default)
    if value is None:
        return default
    if value < 0 or (value == 0 and not zero_allowed):
        raise ConfigError(
            f'[queue] {option} = {value:g} is not valid: give a number of '
            f'seconds{"" if zero_allowed else " above 0"} (default '
            f'{default}).')
    return value


@click.command(context_settings={'help_option_names': ['-h', '--help']})
@click.option('-c', '--config', 'config_file', type=click.Path(),
    envvar='TRYTOND_CONFIG', help='The configuration file.')
@click.option('-d', '--database', 'databases', multiple=True,
    help='A database to serve; repeat for several.')
@click.option('-n', '--processes', type=click.IntRange(min=1),
    default=os.cpu_count() or 1, show_default=True,
    help='The number of worker processes.')
@click.option('--name', 'queues', multiple=True,
    help='Serve only this queue; repeat for several.')
@click.option('--max', 'max_tasks', type=click.IntRange(min=1),
    help='Tasks a process runs before it is replaced.')
@click.option('-t', '--timeout', type=click.FloatRange(min=0.1),
    default=None, help='Seconds to wait for a notification before '
    'looking at the queue again (default [queue] poll_interval).')
@click.option('-v', '--verbose', count=True,
    help='Log more: -v for each task, -vv for debugging.')
@click.option('--logconf', type=click.Path(exists=True, dir_okay=False),
    help='A logging configuration file (logging.config format).')
@click.option('--pidfile', type=click.Path(dir_okay=False),
    help='Write the process id of the manager to this file.')
def main(config_file, databases, processes, queues, max_tasks, timeout,
         verbose, logconf, pidfile):
    """Run the queued tasks of the databases until stopped.

    SIGTERM or SIGINT stops claiming and lets running tasks finish
    within [queue] grace_period seconds; a second signal stops at once.
    """
    log_options = {'verbose': verbose, 'logconf': logconf}
    logs.setup(**log_options)
    with user_errors():
        load_config(config_file)
        names = database_names(databases)
        _check(config_file, names)
        grace = _seconds('grace_period', 30, zero_allowed=True)
        poll = timeout or _seconds('poll_interval', 5)
    manager = Manager(
        os.path.abspath(config_file) if config_file else None, names,
        processes=processes, queues=queues, max_tasks=max_tasks,
        poll_interval=poll, grace_period=grace, log_options=log_options)
    if pidfile:
        with open(pidfile, 'w') as fp:
            fp.write(f'{os.getpid()}\n')
    try:
        code = manager.run()
    finally:
        if pidfile:
            try:
                os.remove(pidfile)
            except FileNotFoundError:
                pass
    raise SystemExit(code)


if __name__ == '__main__':
    main()
