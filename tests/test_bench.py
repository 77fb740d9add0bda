"""memsave.bench: workloads build, strategies run and report consistent counts and ratios."""
import csv
import io
import json
import os
import sys

import numpy as np
import pytest

import memsave
from memsave import bench


@pytest.mark.parametrize("name,sizes", [
    ("mlp", dict(depth=4, width=8, batch=4)),
    ("cnn", dict(depth=2, width=4, seq=6, batch=2)),
    ("transformer", dict(depth=2, width=16, seq=8, batch=2)),
])
def test_every_workload_runs_every_strategy(name, sizes):
    rows = bench.run_benchmark(bench.make_workload(name, **sizes),
                               ["none", "each", "sqrt", "segments=2"], repeats=1)
    forwards = {r.strategy: r.layer_forwards for r in rows}
    depth = sizes["depth"]
    assert forwards["none"] == depth
    assert forwards["each"] == 2 * depth
    assert forwards["segments=2"] == depth + depth // 2  # the last segment is not recomputed
    assert rows[0].peak_ratio == 1.0 and all(r.peak_bytes > 0 for r in rows)


def test_checkpointing_lowers_peak_on_a_deep_mlp():
    rows = bench.run_benchmark(bench.make_workload("mlp", depth=16, width=64, batch=256),
                               ["none", "sqrt"], repeats=1)
    assert rows[1].peak_ratio < 0.6


@pytest.mark.parametrize("bad", ["all", "segments=0", "segments=x"])
def test_bad_strategy_is_rejected(bad):
    with pytest.raises(ValueError):
        bench.parse_strategy(bad)


def test_unknown_workload_is_rejected():
    with pytest.raises(ValueError, match="unknown workload 'rnn'"):
        bench.make_workload("rnn")


def test_output_formats():
    rows = bench.run_benchmark(bench.make_workload("mlp", depth=2, width=4, batch=2), ["none"],
                               repeats=3)
    settings, env = {"workload": "mlp", "depth": 2}, bench.environment()
    doc = json.loads(bench.format_json(rows, settings, env))
    assert doc["settings"] == settings and doc["rows"][0]["strategy"] == "none"
    assert doc["environment"]["memsave"] == memsave.__version__
    assert doc["environment"]["numpy"] == np.__version__
    assert doc["environment"]["cpu_count"] == os.cpu_count()
    row = doc["rows"][0]
    assert 0 < row["min_s"] <= row["median_s"] <= row["max_s"]
    table = list(csv.DictReader(io.StringIO(bench.format_csv(rows, settings, env))))
    assert len(table) == 1
    assert table[0]["strategy"] == "none" and table[0]["depth"] == "2"
    assert table[0]["memsave"] == memsave.__version__ and table[0]["numpy"] == np.__version__
    assert json.loads(table[0]["load_average"]) == env["load_average"]
    assert "peak ratio" in bench.format_table(rows) and "max ms" in bench.format_table(rows)


def test_none_is_always_measured_and_reported_first():
    rows = bench.run_benchmark(bench.make_workload("mlp", depth=4, width=4, batch=2), ["sqrt"],
                               repeats=1)
    assert [r.strategy for r in rows] == ["none", "sqrt"]
    assert rows[1].time_ratio == rows[1].median_s / rows[0].median_s


def test_spread_warnings():
    assert bench.spread_warnings([("none", 0.1, 0.11), ("sqrt", 0.2, 0.23)]) == []
    [warning] = bench.spread_warnings([("none", 0.1, 0.11), ("sqrt", 0.2, 0.3)])
    assert warning.startswith("warning: 'sqrt' steps: median 300.0 ms is 50% above the fastest "
                              "(200.0 ms)")
    assert "time ratios are not reliable" in warning


def test_cli_bench_prints_table_and_json(capsys):
    from memsave.cli import main

    assert main(["bench", "mlp", "--depth", "4", "--width", "8", "--batch", "4",
                 "--repeats", "1", "--no-progress", "--strategies", "none", "sqrt"]) == 0
    out = capsys.readouterr().out
    assert "peak ratio" in out and "sqrt" in out
    assert main(["bench", "mlp", "--depth", "2", "--width", "4", "--batch", "2", "--repeats", "1",
                 "--no-progress", "--json", "--strategies", "none"]) == 0
    captured = capsys.readouterr()
    doc = json.loads(captured.out)
    assert doc["rows"][0]["layer_forwards"] == 2
    assert doc["settings"] == {"workload": "mlp", "depth": 2, "width": 4, "batch": 2, "seq": 0,
                               "seed": 0, "repeats": 1, "device": "cpu", "keep_freed_memory": False}
    assert captured.err.startswith("memsave bench mlp: depth 2, width 4, batch 2; strategies none, "
                                   "each: 1 warm-up step, 1 step under tracemalloc, 1 timed steps")


def test_cli_bench_keep_freed_memory_says_whether_it_applied(capsys):
    import platform

    from memsave.cli import main
    assert main(["bench", "mlp", "--depth", "2", "--width", "4", "--batch", "2", "--repeats", "1",
                 "--no-progress", "--json", "--strategies", "none", "--keep-freed-memory"]) == 0
    settings = json.loads(capsys.readouterr().out)["settings"]
    assert settings["keep_freed_memory"] is (platform.libc_ver()[0] == "glibc")


def test_cli_bench_csv_carries_settings_and_versions(capsys):
    from memsave.cli import main

    assert main(["bench", "mlp", "--depth", "2", "--width", "4", "--batch", "2", "--repeats", "1",
                 "--no-progress", "--csv", "--strategies", "none", "each"]) == 0
    table = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [r["strategy"] for r in table] == ["none", "each"]
    assert {r["width"] for r in table} == {"4"} and {r["repeats"] for r in table} == {"1"}
    assert {r["numpy"] for r in table} == {np.__version__}


@pytest.mark.parametrize("args,message", [
    (["--strategies", "every"], "argument --strategies: unknown strategy 'every'"),
    (["--strategies", "segments=abc"],
     "argument --strategies: segments=K needs a positive integer K, got 'abc'"),
    (["--repeats", "0"], "argument --repeats: must be a positive integer, got '0'"),
    (["--depth", "-1"], "argument --depth: must be a positive integer, or 0 for the default, got '-1'"),
])
def test_cli_bench_bad_arguments_are_argparse_errors(capsys, monkeypatch, args, message):
    from memsave.cli import main

    monkeypatch.setattr(bench, "run_benchmark", _must_not_run)
    with pytest.raises(SystemExit) as exit_info:
        main(["bench", "mlp", *args, "--no-progress"])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def _must_not_run(*args, **kwargs):
    raise AssertionError("the benchmark ran although its arguments were rejected")


def test_cli_bench_plot_without_matplotlib_fails_before_running(capsys, monkeypatch, tmp_path):
    from memsave.cli import main

    monkeypatch.setitem(sys.modules, "matplotlib", None)    # import matplotlib -> ImportError
    monkeypatch.setattr(bench, "run_benchmark", _must_not_run)
    with pytest.raises(SystemExit) as exit_info:
        main(["bench", "mlp", "--plot", str(tmp_path / "p.png"), "--no-progress"])
    assert exit_info.value.code == 2
    assert "--plot needs matplotlib: pip install 'memsave[bench]'" in capsys.readouterr().err
    assert not (tmp_path / "p.png").exists()


def test_plot_shows_absolute_values_from_zero_with_every_strategy_labelled(tmp_path, monkeypatch):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figures = []
    monkeypatch.setattr(plt, "close", figures.append)       # keep the figure to inspect it
    rows = bench.run_benchmark(bench.make_workload("mlp", depth=4, width=8, batch=4),
                               ["none", "each", "sqrt"], repeats=2)
    bench.plot(rows, str(tmp_path / "p.png"))
    assert (tmp_path / "p.png").stat().st_size > 0
    ax = figures[0].axes[0]
    assert ax.get_xlim()[0] == 0 and ax.get_ylim()[0] == 0
    assert "MiB" in ax.get_ylabel() and "ms" in ax.get_xlabel()
    assert {t.get_text() for t in ax.texts} == {"none", "each", "sqrt"}
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend[0] == f"none: {rows[0].peak_bytes / bench.MiB:.1f} MiB, {rows[0].median_s * 1e3:.0f} ms"


def test_policy_strategies_order_peaks_and_skip_kept_matmuls(monkeypatch):
    from memsave.functions.connection import Linear
    linear_calls = []
    forward = Linear.forward
    monkeypatch.setattr(Linear, "forward", lambda self, *xs: linear_calls.append(1) or forward(self, *xs))
    strategies = ["sqrt", *(f"policy={p}" for p in [*bench.SEGMENT_POLICIES, *bench.COMPRESSIONS])]
    workload = bench.make_workload("mlp", depth=16, width=64, batch=256)
    rows = bench.run_benchmark(workload, strategies, repeats=1)
    matmuls = {}
    for row in rows:
        del linear_calls[:]
        bench.step(workload, row.strategy)
        matmuls[row.strategy] = len(linear_calls)
    peak = {r.strategy: r.peak_bytes for r in rows}
    forwards = {r.strategy: r.layer_forwards for r in rows}
    # 4 segments of 4 layers, the last not checkpointed: 12 layers re-run under a segment policy
    assert forwards == {"none": 16, "sqrt": 28, "policy=dots": 28, "policy=everything": 16,
                        "policy=nothing": 28, "policy=offload": 28, "policy=int8": 16,
                        "policy=fp16": 16}
    # kept Linear outputs stand in for their op: no matmul is re-run under dots/offload/everything
    assert matmuls == {**forwards, "policy=dots": 16, "policy=offload": 16}
    assert peak["policy=nothing"] == pytest.approx(peak["sqrt"], rel=0.05)
    assert peak["policy=offload"] == pytest.approx(peak["policy=dots"], rel=0.05)  # CPU: a SAVE
    # dots keeps every pre-activation, which here is as much as plain keeps (the tanh outputs),
    # plus the segment inputs: above sqrt, near plain, below keeping everything
    assert peak["sqrt"] < peak["policy=dots"] < peak["policy=everything"]
    assert peak["none"] < peak["policy=everything"]
    assert peak["policy=int8"] < peak["policy=fp16"] < peak["none"]


def test_unknown_policy_strategy_names_the_choices():
    with pytest.raises(ValueError, match="policy=P needs P in dots, everything, nothing, offload, "
                                         "int8, fp16, got 'all'"):
        bench.parse_strategy("policy=all")


# ----- budget=B: the planner's schedule --------------------------------------------------------

def test_budget_strategies_parse_bytes_and_fractions():
    assert bench.parse_strategy("budget=1KiB") == ("budget", 1024)
    assert bench.parse_strategy("budget=0.25") == ("budget", 0.25)
    with pytest.raises(ValueError, match=r"budget=F needs a fraction F in \(0, 1\]"):
        bench.parse_strategy("budget=1.5")
    with pytest.raises(ValueError, match="is not a size"):
        bench.parse_strategy("budget=lots")


def test_budget_strategy_runs_the_planned_schedule():
    workload = bench.make_workload("mlp", depth=8, width=64, batch=256)
    least = memsave.planner.minimum_budget(memsave.planner.profile(workload.layers, workload.x))[0]
    tight = f"budget={least}"
    rows = bench.run_benchmark(workload, ["budget=1.0", tight], repeats=1)
    forwards = {r.strategy: r.layer_forwards for r in rows}
    assert forwards["budget=1.0"] == 8
    assert forwards[tight] == 8 + bench.planned(workload, tight).extra_forwards > 8
    assert rows[2].peak_bytes < rows[0].peak_bytes


def test_budget_below_the_minimum_is_an_error_in_the_cli(capsys):
    from memsave.cli import main

    code = main(["bench", "mlp", "--depth", "4", "--width", "8", "--batch", "4", "--repeats", "1",
                 "--no-progress", "--strategies", "budget=16"])
    assert code == 2
    assert "below the minimum any schedule" in capsys.readouterr().err


def test_cli_bench_on_gpu_without_one_says_so(capsys):
    from memsave import backend, cli
    if backend.is_gpu_available():
        pytest.skip("a GPU is present: the GPU suite (benchmarks/gpu_suite.sh) runs this for real")
    assert cli.main(["bench", "mlp", "--depth", "2", "--width", "4", "--batch", "2",
                     "--repeats", "1", "--no-progress", "--device", "gpu"]) == 2
    assert "needs CuPy and a CUDA GPU" in capsys.readouterr().err
