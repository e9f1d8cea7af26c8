"""The `csp` entry point: exit codes and one-line errors."""

import subprocess
import sys

from csp.cli import main


def test_unknown_command_is_one_line_exit_2(capsys):
    assert main(["no-such-verb"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("csp: error:")
    assert "\n" not in err


def test_version_and_console_script():
    out = subprocess.run([sys.executable, "-m", "csp", "--version"], capture_output=True, text=True)
    assert out.returncode == 0
    assert out.stdout.startswith("csp ")
