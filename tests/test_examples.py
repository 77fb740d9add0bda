"""examples/*.py run (``--quick``), exit 0, and print matching plain and checkpointed losses."""
import re
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
AGREE = re.compile(r"^losses agree: max \|diff\| = (\S+)$", re.MULTILINE)


def run_example(name, *args):
    proc = subprocess.run([sys.executable, str(EXAMPLES / name), *args], check=False,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"{name} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def assert_losses_agree(out):
    match = AGREE.search(out)
    assert match, out
    assert float(match[1]) <= 1e-4


@pytest.mark.parametrize("name", ["digits_mlp.py", "digits_cnn.py", "char_transformer.py",
                                  "chainer_port.py"])
def test_help(name):
    out = run_example(name, "--help")
    assert out.startswith("usage:") and "--quick" in out


def test_char_transformer():
    out = run_example("char_transformer.py", "--quick")
    assert_losses_agree(out)
    assert re.search(r"peak memory of one training step: plain \S+ MiB, checkpointed \S+ MiB", out)
    assert "sample:\nROMEO:" in out


def test_char_transformer_segments_option():
    out = run_example("char_transformer.py", "--quick", "--segments", "2", "--dropout", "0.2",
                      "--sample", "0")
    assert_losses_agree(out)
    assert "segments 2" in out and "sample:" not in out


def test_chainer_port():
    out = run_example("chainer_port.py", "--quick")
    assert_losses_agree(out)
    assert re.search(r"peak memory of one training step: plain \S+ MiB, forget \S+ MiB", out)


def test_chainer_port_uses_memsave_forget():
    source = (EXAMPLES / "chainer_port.py").read_text()
    assert "from memsave import forget" in source
    assert "# from chainer.functions import forget" in source


def test_digits_mlp():
    pytest.importorskip("sklearn")
    out = run_example("digits_mlp.py", "--quick")
    assert_losses_agree(out)
    assert re.search(r"test accuracy: plain \S+%, checkpointed \S+%", out)


def test_digits_cnn():
    pytest.importorskip("sklearn")
    out = run_example("digits_cnn.py", "--quick")
    assert_losses_agree(out)
    assert "BatchNorm running statistics agree" in out
    assert re.search(r"test accuracy: plain \S+%, checkpointed \S+%", out)
