"""``memsave demo`` (memsave/demo.py and its wiring in memsave/cli.py), run small and in-process."""
import contextlib
import io
import re

import numpy as np
import pytest

from memsave import backend, cli, demo

TINY = ["--steps", "3", "--blocks", "4", "--width", "32", "--seq", "16", "--batch", "4",
        "--heads", "4", "--no-progress"]
ROW = re.compile(r"^(plain|each block|sqrt)\s+(\S+)\s+(\S+)\s+(\S+)\s+(\S+)\s+(\S+)\s+(\S+)x\s+(\S+)x$")


@pytest.fixture(scope="module")
def tiny_run():
    """One in-process run of the CLI with tiny flags: (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main(["demo", *TINY])
    return code, out.getvalue(), err.getvalue()


def rows(out):
    """strategy -> (final loss, peak MiB, min ms, median ms, max ms, memory ratio, time ratio)"""
    return {m[1]: m.groups()[1:] for m in map(ROW.match, out.splitlines()) if m}


def test_demo_exits_zero_and_prints_the_three_strategies(tiny_run):
    code, out, err = tiny_run
    assert code == 0, out + err
    assert set(rows(out)) == {"plain", "each block", "sqrt"}
    header = next(line for line in out.splitlines() if line.startswith("strategy"))
    for column in ("strategy", "final loss", "peak MiB", "min ms", "median ms", "max ms",
                   "memory vs plain", "time vs plain"):
        assert column in header


def test_header_states_the_steps_and_the_estimate_before_the_table(tiny_run):
    lines = tiny_run[1].splitlines()
    assert lines[1] == ("3 strategies (plain, each block, sqrt), each: 1 warm-up step, 3 timed "
                        "steps, 1 step under tracemalloc for the peak memory")
    assert re.fullmatch(r"estimated time \(from two plain steps\): about \d+ (s|min)", lines[2])
    assert lines[3].startswith("strategy")
    assert re.fullmatch(r"done in \d+ (s|min)", lines[-1])


def test_step_times_show_min_median_max(tiny_run):
    for name, row in rows(tiny_run[1]).items():
        low, median, high = map(float, row[2:5])
        assert 0 < low <= median <= high, name


def test_progress_bars_count_warm_up_timed_and_memory_steps(capsys):
    cfg = demo.DemoConfig(steps=2, batch=2, seq=8, blocks=2, width=8, heads=2)
    result = demo.run_strategy("plain", cfg, progress=True)
    err = capsys.readouterr().err
    for phase in ("plain      warm-up", "plain      timed", "plain      memory"):
        assert phase in err
    assert "4/4" in err and "5/" not in err          # 1 warm-up + 2 timed + 1 memory
    assert len(result.losses) == 3 and len(result.step_seconds) == 2


def test_checkpointed_strategies_peak_below_plain(tiny_run):
    table = rows(tiny_run[1])
    plain = float(table["plain"][1])
    assert float(table["each block"][1]) < plain
    assert float(table["sqrt"][1]) < plain
    assert float(table["plain"][5]) == 1.0          # ratios are relative to plain
    assert float(table["each block"][5]) < 1.0


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
    assert all(len(r.losses) == 3 and len(r.step_seconds) == 2 for r in results)
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


def test_spread_warning_when_step_times_vary(monkeypatch, capsys):
    real = demo.run_strategy

    def noisy(strategy, *args, **kwargs):
        result = real(strategy, *args, **kwargs)
        if strategy == "each block":
            result.step_seconds = [0.1, 0.2, 0.3]
        return result

    monkeypatch.setattr(demo, "run_strategy", noisy)
    assert cli.main(["demo", *TINY]) == 0
    warnings = [line for line in capsys.readouterr().out.splitlines() if line.startswith("warning")]
    assert len(warnings) <= 3 and any("'each block' steps: median 200.0 ms is 100% above the "
                                      "fastest (100.0 ms)" in w for w in warnings)
    assert "time ratios are not reliable" in warnings[-1]


def test_quick_by_default_full_on_request():
    parse = cli.build_parser().parse_args
    assert cli._demo_config(parse(["demo"])) == demo.DemoConfig()
    assert cli._demo_config(parse(["demo", "--full"])) == demo.FULL
    assert cli._demo_config(parse(["demo", "--full", "--steps", "2"])).steps == 2
    assert cli._demo_config(parse(["demo", "--full", "--steps", "2"])).width == demo.FULL.width
    quick, full = demo.DemoConfig(), demo.FULL
    quick_work = quick.steps * quick.batch * quick.seq * quick.blocks * quick.width ** 2
    assert full.steps * full.batch * full.seq * full.blocks * full.width ** 2 > 10 * quick_work


def test_estimate_extrapolates_the_faster_of_two_plain_steps(monkeypatch):
    times = iter([0.9, 0.5])
    monkeypatch.setattr(demo, "_timed_step", lambda *args: (1.0, next(times)))
    ids, vocab = demo.encode(demo.load_text()[:5000])
    cfg = demo.DemoConfig(steps=4, batch=2, seq=8, blocks=1, width=8, heads=2)
    # 3 strategies x (1 warm-up + 4 timed + 1 memory) steps, checkpointed ones ~1.35x plain
    assert demo.estimate_seconds(cfg, ids, vocab) == pytest.approx(0.5 * 6 * demo.ESTIMATE_FACTOR)


@pytest.mark.parametrize("option,value,message", [
    ("--steps", "0", "argument --steps: must be a positive integer, got '0'"),
    ("--blocks", "-1", "argument --blocks: must be a positive integer, got '-1'"),
    ("--seed", "x", "argument --seed: must be a positive integer, or 0 for the default, got 'x'"),
])
def test_bad_numbers_are_argparse_errors(capsys, option, value, message):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["demo", option, value, "--no-progress"])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_bad_options_are_clear_errors(capsys):
    assert cli.main(["demo", "--width", "30", "--heads", "4", "--no-progress"]) == 2
    assert "--width (30) must be divisible" in capsys.readouterr().err


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
