"""memsave.bench: workloads build, strategies run and report consistent counts and ratios."""
import json

import pytest

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
    rows = bench.run_benchmark(bench.make_workload("mlp", depth=2, width=4, batch=2), ["none"], repeats=1)
    assert json.loads(bench.format_json(rows))[0]["strategy"] == "none"
    assert bench.format_csv(rows).splitlines()[0].startswith("workload,strategy,peak_bytes")
    assert "peak ratio" in bench.format_table(rows)


def test_cli_bench_prints_table_and_json(capsys):
    from memsave.cli import main

    assert main(["bench", "mlp", "--depth", "4", "--width", "8", "--batch", "4",
                 "--repeats", "1", "--no-progress", "--strategies", "none", "sqrt"]) == 0
    out = capsys.readouterr().out
    assert "peak ratio" in out and "sqrt" in out
    assert main(["bench", "mlp", "--depth", "2", "--width", "4", "--batch", "2", "--repeats", "1",
                 "--no-progress", "--json", "--strategies", "none"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["layer_forwards"] == 2


def test_cli_bench_rejects_bad_strategy(capsys):
    from memsave.cli import main

    assert main(["bench", "mlp", "--strategies", "every", "--no-progress"]) == 2
    assert "unknown strategy 'every'" in capsys.readouterr().err
