"""The documentation builds with Sphinx without a warning."""
import os

import pytest

DOCS = os.path.join(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))), 'docs')


@pytest.mark.timeout(300)
def test_documentation_builds_without_warnings(tmp_path):
    build = pytest.importorskip(
        'sphinx.cmd.build',
        reason='Sphinx is not installed: pip install -e ".[test]"')

    status = build.build_main(
        ['-W', '-q', '-b', 'html', DOCS, str(tmp_path / 'html')])

    assert status == 0, 'sphinx-build -W failed: see the warnings above'
    assert (tmp_path / 'html' / 'index.html').is_file()
