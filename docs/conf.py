"""Sphinx configuration of the trytond_queue documentation."""
import os
import re

HERE = os.path.dirname(os.path.abspath(__file__))


def _version():
    # Read, not imported, so that the build needs no installed package.
    path = os.path.join(HERE, '..', 'trytond_queue', '__init__.py')
    with open(path, encoding='utf-8') as fp:
        return re.search(
            r"^__version__ = '([^']+)'", fp.read(), re.MULTILINE).group(1)


project = 'trytond_queue'
author = 'the trytond_queue authors'
copyright = 'the trytond_queue authors, GPL-3.0-or-later'
release = _version()
version = '.'.join(release.split('.')[:2])

extensions = []
exclude_patterns = ['_build']
highlight_language = 'python'
html_theme = 'alabaster'
html_title = f'trytond_queue {release}'
