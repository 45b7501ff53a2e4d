"""What the command lines share: -c and -d, errors, printed output."""
import contextlib
import datetime
import json
import os
import textwrap

import click

from ..config import config
from ..exceptions import TrytondQueueError

__all__ = [
    'load_config', 'database_names', 'one_database', 'user_errors',
    'config_option', 'echo_json', 'echo_table', 'echo_fields',
    'format_time', 'format_age', 'first_line', 'report_changes',
    'DATABASE_NAMES_VARIABLE',
    ]

DATABASE_NAMES_VARIABLE = 'TRYTOND_DATABASE_NAMES'
ERROR_WIDTH = 60


def load_config(config_file: str | None):
    """Read the file given by -c, else the one of TRYTOND_CONFIG."""
    config.update_etc(config_file)


def database_names(values) -> list[str]:
    """Return the names given by -d, else those of TRYTOND_DATABASE_NAMES."""
    if values:
        return list(values)
    names = os.environ.get(DATABASE_NAMES_VARIABLE, '')
    return [n.strip() for n in names.split(',') if n.strip()]


def one_database(value: str | None) -> str:
    """Return the database named by -d, or the one of the environment."""
    names = database_names([value] if value else [])
    if not names:
        raise click.UsageError(
            'Give the database with -d NAME or TRYTOND_DATABASE_NAMES.')
    if len(names) > 1:
        raise click.UsageError(
            f'TRYTOND_DATABASE_NAMES names several databases '
            f'({", ".join(names)}): choose one with -d NAME.')
    return names[0]


@contextlib.contextmanager
def user_errors():
    """Report a TrytondQueueError as a one-line message and exit code 1.

    It serves as a decorator too.  The errors of trytond_queue say what
    went wrong and how to fix it; a traceback would only hide that.
    """
    try:
        yield
    except TrytondQueueError as exception:
        raise click.ClickException(exception.message) from exception


def _inherit_config(ctx, param, value):
    # A -c given after the command name wins over one given before it.
    parent = ctx.parent
    while value is None and parent is not None:
        value = parent.params.get(param.name)
        parent = parent.parent
    return value


def config_option(function):
    """Add -c/--config, also taken from the enclosing command group."""
    return click.option(
        '-c', '--config', 'config_file', metavar='FILE',
        type=click.Path(dir_okay=False), callback=_inherit_config,
        help='The configuration file; TRYTOND_CONFIG when absent.',
        )(function)


def format_time(value: datetime.datetime | None) -> str:
    """Return a time to the second, or nothing for None."""
    return value.isoformat(' ', 'seconds') if value else ''


def format_age(seconds: float | None) -> str | None:
    """Return a duration in seconds as H:MM:SS, or None for None."""
    if seconds is None:
        return None
    return str(datetime.timedelta(seconds=round(max(seconds, 0))))


def first_line(text: str | None, width: int = ERROR_WIDTH) -> str:
    """Return the first line of a text, shortened to width."""
    if not text:
        return ''
    return textwrap.shorten(text.splitlines()[0], width, placeholder='...')


def _json_default(value):
    if isinstance(value, datetime.datetime):
        return value.isoformat()
    raise TypeError(f'{type(value).__name__} is not JSON serialisable')


def echo_json(value, indent: int | None = 2):
    """Print a value as JSON, times in ISO 8601; one line without indent."""
    click.echo(json.dumps(value, indent=indent, default=_json_default))


def echo_table(headers, rows):
    """Print rows in aligned columns, numbers to the right."""
    cells = [[str(v) if v is not None else '' for v in r] for r in rows]
    widths = [
        max([len(h)] + [len(r[i]) for r in cells])
        for i, h in enumerate(headers)]
    click.echo('  '.join(h.ljust(w) for h, w in zip(headers, widths))
        .rstrip())
    for row, texts in zip(rows, cells):
        click.echo('  '.join(
            t.rjust(w) if isinstance(v, int) else t.ljust(w)
            for v, t, w in zip(row, texts, widths)).rstrip())


def echo_fields(fields):
    """Print label: value lines, a value of several lines below."""
    width = max(len(k) for k, _ in fields) + 2
    for key, value in fields:
        text = '' if value is None else str(value).rstrip()
        if '\n' in text:
            click.echo(f'{key}:')
            click.echo(textwrap.indent(text, '  '))
        else:
            click.echo(f'{key + ":":<{width}}{text}'.rstrip())


def report_changes(ids, before, changed, wanted, reasons):
    """Print what became of each task; fail if one was left unchanged.

    before holds the state of each task that exists, changed the ids
    brought to the state wanted, reasons why a task in a state was not.
    """
    refused = 0
    for task_id in ids:
        state = before.get(task_id)
        if task_id in changed:
            click.echo(f'Task {task_id} is {wanted}.')
        elif state == wanted:
            click.echo(f'Task {task_id} is already {wanted}.')
        else:
            refused += 1
            reason = 'does not exist' if state is None else reasons[state]
            click.echo(f'Task {task_id} {reason}.', err=True)
    if refused:
        raise click.ClickException(
            f'{refused} of {len(ids)} task(s) left unchanged.')
