"""Summarise a py-spy profile written with ``--format raw``.

``python bench/stacks.py FILE`` prints, for the samples whose stack
holds the --within function (the worker processes' loop by default),
the functions that hold the most samples, inclusive and self.  The
benchmark's --profile option writes such files for the drains.
"""
import collections
import re

import click

# py-spy writes "name (file:line)"; the line is dropped so that the
# samples of one function add up.
FRAME = re.compile(r'^(?P<name>.*?) \((?P<file>[^()]*?)(?::\d+)?\)$')


def parse(path):
    """Yield (frames, samples) of each line of a raw py-spy profile."""
    with open(path) as fp:
        for line in fp:
            stack, _, count = line.rstrip('\n').rpartition(' ')
            if not stack or not count.isdigit():
                continue
            # Frames that name the process, not a function, are left
            # out; a command line with a newline spans two lines.
            frames = [
                f'{m["name"]} ({m["file"]})'
                for m in map(FRAME.match, stack.split(';')) if m]
            if frames:
                yield frames, int(count)


def summarise(path, within):
    """Return (total, inclusive counter, self counter) of the samples."""
    inclusive, leaf = collections.Counter(), collections.Counter()
    total = 0
    for frames, count in parse(path):
        if within and not any(within in f for f in frames):
            continue
        total += count
        for function in set(frames):
            inclusive[function] += count
        leaf[frames[-1]] += count
    return total, inclusive, leaf


@click.command(context_settings={'help_option_names': ['-h', '--help']})
@click.argument('path', type=click.Path(exists=True, dir_okay=False))
@click.option('--within', default='WorkerProcess.serve', show_default=True,
    help='Keep the samples whose stack holds this text; "" for all.')
@click.option('--top', type=click.IntRange(min=1), default=40,
    show_default=True, help='Functions listed.')
@click.option('--match', 'pattern', default=None,
    help='List only the functions whose name holds this text.')
def main(path, within, top, pattern):
    """Print where the samples of a py-spy raw profile went."""
    total, inclusive, leaf = summarise(path, within)
    if not total:
        raise click.ClickException(f'No sample of {path} holds {within!r}.')
    click.echo(f'{total} samples within {within!r}')
    for title, counter in (('inclusive', inclusive), ('self', leaf)):
        click.echo(f'\n{title}:')
        shown = 0
        for function, count in counter.most_common():
            if pattern and pattern not in function:
                continue
            click.echo(f'{100 * count / total:6.1f} %  {function}')
            shown += 1
            if shown >= top:
                break


if __name__ == '__main__':
    main()
