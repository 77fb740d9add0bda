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


# ----- memsave plan ------------------------------------------------------------------------------

def test_plan_prints_the_frontier_and_skips_infeasible_budgets(capsys):
    code = cli.main(["plan", "mlp", "--depth", "6", "--width", "16", "--batch", "32", "--repeats", "1",
                 "--budgets", "1.0", "min", "64"])
    out, err = capsys.readouterr()
    assert code == 0
    lines = out.splitlines()
    assert lines[0].startswith("config") and [line.split()[0] for line in lines[1:3]] == ["plain", "sqrt"]
    rows = {line.split("  ")[0].strip(): line for line in lines[3:]}
    assert set(rows) == {"budget 1.0", "budget min"}
    forwards = rows["budget min"].split("/")
    predicted, executed = forwards[0].split()[-1], forwards[1].split()[0]
    assert predicted == executed and int(executed) > 0
    assert "skipped budget 64: budget 64 bytes is below the minimum" in err


def test_plan_plot_without_matplotlib_fails_before_running(capsys, monkeypatch, tmp_path):
    from memsave import frontier

    def must_not_run(*args, **kwargs):
        raise AssertionError("the frontier must not run when --plot cannot be drawn")

    monkeypatch.setitem(sys.modules, "matplotlib", None)    # import matplotlib -> ImportError
    monkeypatch.setattr(frontier, "frontier", must_not_run)
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["plan", "mlp", "--plot", str(tmp_path / "f.png")])
    assert exit_info.value.code == 2
    assert "--plot needs matplotlib" in capsys.readouterr().err


def test_plan_plot_writes_a_png(tmp_path):
    path = tmp_path / "frontier.png"
    assert cli.main(["plan", "mlp", "--depth", "4", "--width", "8", "--batch", "8", "--repeats", "1",
                     "--budgets", "min", "--plot", str(path)]) == 0
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
