"""The command line (memsave/cli.py, memsave/__main__.py)."""
import argparse
import subprocess
import sys

import pytest

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


@pytest.mark.parametrize("convert,good,bad", [
    (cli.positive_int, {"1": 1, "12": 12}, ["0", "-1", "x", "1.5", ""]),
    (cli.size_or_default, {"0": 0, "7": 7}, ["-1", "x", "2.0"]),
    (cli.strategy, {"none": "none", "segments=3": "segments=3"}, ["segments=abc", "all"]),
])
def test_argument_types(convert, good, bad):
    for text, value in good.items():
        assert convert(text) == value
    for text in bad:
        with pytest.raises(argparse.ArgumentTypeError):
            convert(text)


def test_demo_help_states_defaults_and_full(capsys):
    with pytest.raises(SystemExit):
        cli.main(["demo", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "--full" in out and "well under a minute" in out
    assert "(default: 10; 20 with --full)" in out
