"""The command line (memsave/cli.py, memsave/__main__.py)."""
import subprocess
import sys

import memsave
from memsave import cli


def test_python_dash_m_version():
    proc = subprocess.run([sys.executable, "-m", "memsave", "--version"],
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == f"memsave {memsave.__version__}\n"
    assert memsave.__version__ == "0.1.0"


def test_main_version_in_process(capsys):
    assert cli.main(["--version"]) == 0
    assert capsys.readouterr().out == f"memsave {memsave.__version__}\n"


def test_main_without_arguments_prints_help(capsys):
    assert cli.main([]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: memsave")
    assert "--version" in out


def test_unknown_option_exits_with_usage_error(capsys):
    proc = subprocess.run([sys.executable, "-m", "memsave", "--no-such-option"],
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 2
    assert "unrecognized arguments: --no-such-option" in proc.stderr
