"""The ``senet`` command's vocabulary: the help without torch, one meaning per option across
commands (parametrized over the commands that take it), and the old spellings that still work
for one release with a note on stderr."""

from __future__ import annotations

import subprocess
import sys

from senet.cli.main import COMMANDS

_HELP_SCRIPT = """
import contextlib, io, sys
import senet, senet.analysis
from senet.cli.main import COMMANDS, main
out = io.StringIO()
for argv in [["--help"], ["--version"], *([name, "--help"] for name in COMMANDS)]:
    with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):
        main(argv)
print(len(out.getvalue()), sorted(m for m in ("torch", "numpy", "PIL") if m in sys.modules))
"""


def test_help_and_version_import_no_torch():
    """``senet --help``, ``senet COMMAND --help`` and ``--version`` build the parser of every
    command without importing torch (nor numpy, PIL): the library is imported when a command runs."""
    proc = subprocess.run([sys.executable, "-c", _HELP_SCRIPT], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    chars, imported = proc.stdout.split(" ", 1)
    assert int(chars) > 500 * len(COMMANDS)  # every help was printed
    assert imported.strip() == "[]"
