"""``memsave demo`` (memsave/demo.py and its wiring in memsave/cli.py), run small and in-process."""
import contextlib
import io
import re

import numpy as np
import pytest

from memsave import backend, cli, demo

TINY = ["--steps", "3", "--blocks", "4", "--width", "32", "--seq", "16", "--batch", "4",
        "--heads", "4", "--no-progress"]
ROW = re.compile(r"^(plain|each block|sqrt)\s+(\S+)\s+(\S+)\s+(\S+)\s+(\S+)x\s+(\S+)x$")


@pytest.fixture(scope="module")
def tiny_run():
    """One in-process run of the CLI with tiny flags: (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main(["demo", *TINY])
    return code, out.getvalue(), err.getvalue()


def rows(out):
    return {m[1]: m.groups()[1:] for m in map(ROW.match, out.splitlines()) if m}


def test_demo_exits_zero_and_prints_the_three_strategies(tiny_run):
    code, out, err = tiny_run
    assert code == 0, out + err
    assert set(rows(out)) == {"plain", "each block", "sqrt"}
    header = out.splitlines()[1]
    for column in ("strategy", "final loss", "peak MiB", "step ms", "memory vs plain",
                   "time vs plain"):
        assert column in header


def test_checkpointed_strategies_peak_below_plain(tiny_run):
    table = rows(tiny_run[1])
    plain = float(table["plain"][1])
    assert float(table["each block"][1]) < plain
    assert float(table["sqrt"][1]) < plain
    assert float(table["plain"][3]) == 1.0          # ratios are relative to plain
    assert float(table["each block"][3]) < 1.0


def test_losses_agree_across_strategies(tiny_run):
    out = tiny_run[1]
    table = rows(out)
    assert len({row[0] for row in table.values()}) == 1    # same final loss, printed
    match = re.search(r"losses agree across strategies: max \|diff\| = (\S+)", out)
    assert match and float(match[1]) <= demo.LOSS_TOLERANCE


def test_run_strategy_gives_identical_loss_curves():
    cfg = demo.DemoConfig(steps=2, batch=2, seq=8, blocks=4, width=16, heads=2)
    ids, vocab = demo.encode(demo.load_text())
    results = [demo.run_strategy(s, cfg, progress=False, ids=ids, vocab=vocab)
               for s in demo.STRATEGIES]
    assert [r.name for r in results] == list(demo.STRATEGIES)
    assert all(len(r.losses) == 2 and len(r.step_seconds) == 2 for r in results)
    assert demo.max_loss_difference(results) <= demo.LOSS_TOLERANCE
    assert all(np.isfinite(r.losses).all() for r in results)


def test_differing_losses_exit_with_one(monkeypatch, capsys):
    real = demo.run_strategy

    def skewed(strategy, *args, **kwargs):
        result = real(strategy, *args, **kwargs)
        if strategy == "sqrt":
            result.losses = [x + 1.0 for x in result.losses]
        return result

    monkeypatch.setattr(demo, "run_strategy", skewed)
    assert cli.main(["demo", *TINY]) == 1
    assert "losses DIFFER across strategies" in capsys.readouterr().out


def test_text_ships_with_the_package():
    text = demo.load_text()
    assert len(text) > 100_000
    ids, vocab = demo.encode(text)
    assert ids.dtype == np.int32 and len(vocab) == ids.max() + 1


def test_bad_options_are_clear_errors(capsys):
    assert cli.main(["demo", "--width", "30", "--heads", "4", "--no-progress"]) == 2
    assert "--width (30) must be divisible" in capsys.readouterr().err
    assert cli.main(["demo", "--steps", "0", "--no-progress"]) == 2
    assert "--steps must be at least 1" in capsys.readouterr().err


@pytest.mark.skipif(backend.is_gpu_available(), reason="this machine has a GPU")
def test_gpu_without_a_gpu_is_a_clear_error(capsys):
    assert cli.main(["demo", "--device", "gpu", *TINY]) == 2
    err = capsys.readouterr().err
    assert "--device gpu: no usable GPU" in err


@pytest.mark.skipif(not backend.is_gpu_available(), reason="needs a GPU (CuPy)")
def test_gpu_run_agrees(capsys):
    assert cli.main(["demo", "--device", "gpu", *TINY]) == 0
    assert "losses agree" in capsys.readouterr().out


def test_version_still_works(capsys):
    assert cli.main(["--version"]) == 0
    assert capsys.readouterr().out.startswith("memsave ")
