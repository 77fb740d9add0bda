#!/usr/bin/env bash
# Create the comparison venvs under benchmarks/.venvs/ (idempotent).
#   torch   : torch==2.13.0 (CPU wheel; never install an unpinned torch)
#   chainer : chainer==7.8.1 on numpy<2 (built with setuptools<70 + wheel, no build isolation)
# Usage: bash benchmarks/setup_venvs.sh [torch] [chainer]   (default: both)
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENVS="$HERE/.venvs"
PYTHON="${PYTHON:-python3}"

# make_venv NAME IMPORT_CHECK INSTALL_STEP...
#   Creates $VENVS/NAME unless its interpreter already passes IMPORT_CHECK.
make_venv() {
    local name="$1" check="$2"
    shift 2
    local py="$VENVS/$name/bin/python"
    if [[ -x "$py" ]] && "$py" -c "$check" 2>/dev/null; then
        echo "[setup_venvs] $name: ok ($VENVS/$name)"
        return
    fi
    echo "[setup_venvs] $name: creating $VENVS/$name"
    "$PYTHON" -m venv --clear "$VENVS/$name"
    local step
    for step in "$@"; do
        # shellcheck disable=SC2086  # each step is a word-split pip argument list
        "$py" -m pip install --quiet $step
    done
    "$py" -c "$check"
    echo "[setup_venvs] $name: done"
}

setup_torch() {
    make_venv torch \
        "import torch, numpy; assert torch.__version__.startswith('2.13.0')" \
        "torch==2.13.0 numpy"
}

setup_chainer() {
    make_venv chainer \
        "import chainer, numpy; assert chainer.__version__ == '7.8.1'" \
        "setuptools<70 wheel numpy<2" \
        "--no-build-isolation chainer==7.8.1"
}

targets=("$@")
[[ ${#targets[@]} -eq 0 ]] && targets=(torch chainer)
for t in "${targets[@]}"; do
    case "$t" in
        torch) setup_torch ;;
        chainer) setup_chainer ;;
        *) echo "unknown venv '$t' (expected torch or chainer)" >&2; exit 2 ;;
    esac
done
