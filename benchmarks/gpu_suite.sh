#!/usr/bin/env bash
# The GPU checks in one command: the test suite's CuPy cases, then `memsave bench mlp
# --device gpu` and `memsave demo --device gpu`, each recorded under benchmarks/gpu_results/.
#
#   bash benchmarks/gpu_suite.sh              # makes .venv-gpu: memsave[test,mpi] + CuPy
#   PYTHON=/path/to/python bash benchmarks/gpu_suite.sh    # an environment that has CuPy
#
# The CuPy wheel follows the driver's CUDA major version (nvidia-smi): cupy-cuda13x for
# 13, else cupy-cuda12x; CUPY_PACKAGE overrides.  Exits 2 when no CUDA GPU is visible,
# else with pytest's status.  Offline machines: prepare the environment elsewhere and pass
# PYTHON.
set -uo pipefail
cd "$(dirname "$0")/.."

stamp=$(date -u +%Y%m%dT%H%M%SZ)
out="benchmarks/gpu_results/$stamp"
mkdir -p "$out"

if [ -z "${PYTHON:-}" ]; then
    cuda_major=$(nvidia-smi 2>/dev/null | sed -n 's/.*CUDA Version: \([0-9]*\).*/\1/p' | head -1)
    package=${CUPY_PACKAGE:-$([ "${cuda_major:-12}" -ge 13 ] && echo cupy-cuda13x || echo cupy-cuda12x)}
    if [ ! -x .venv-gpu/bin/python ]; then
        python3 -m venv .venv-gpu || exit 1
    fi
    .venv-gpu/bin/python -m pip install -q -e '.[test,mpi]' "$package" || exit 1
    PYTHON=.venv-gpu/bin/python
fi
{
    echo "date: $stamp"
    echo "commit: $(git rev-parse HEAD 2>/dev/null)"
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1
    "$PYTHON" - <<'EOF'
from memsave import backend
import numpy
print("numpy", numpy.__version__)
if backend.is_gpu_available():
    cupy = backend.array_module("gpu")
    props = cupy.cuda.runtime.getDeviceProperties(0)
    print("cupy", cupy.__version__, "| CUDA runtime", cupy.cuda.runtime.runtimeGetVersion(),
          "| device 0:", props["name"].decode())
EOF
} > "$out/environment.txt" 2>&1
cat "$out/environment.txt"

if ! "$PYTHON" -c "from memsave import backend; raise SystemExit(not backend.is_gpu_available())"; then
    echo "no CUDA GPU visible to CuPy: nothing to run (the CuPy test cases skip without one)" \
        | tee "$out/summary.md"
    exit 2
fi

echo "+ pytest: the CuPy cases and the doctests"
"$PYTHON" -m pytest -p no:cacheprovider -rs -k "cupy or doctest" tests \
    --junitxml="$out/pytest.xml" 2>&1 | tee "$out/pytest.txt"
pytest_rc=${PIPESTATUS[0]}

run() {   # run NAME COMMAND...: record output and exit status
    local name=$1; shift
    echo "+ $*"
    "$@" > "$out/$name.txt" 2>&1
    local rc=$?
    cat "$out/$name.txt"
    echo "| \`$*\` | $rc |" >> "$out/commands.md"
}
echo "| command | exit |" > "$out/commands.md"
echo "|---|---|" >> "$out/commands.md"
run bench_mlp_gpu "$PYTHON" -m memsave bench mlp --device gpu --no-progress
run bench_mlp_cpu "$PYTHON" -m memsave bench mlp --no-progress
run demo_gpu "$PYTHON" -m memsave demo --device gpu --no-progress

{
    echo "# GPU suite, $stamp"
    echo
    echo '```'
    cat "$out/environment.txt"
    echo '```'
    echo
    echo "pytest (CuPy cases and doctests): $(grep -E ' in [0-9.]+s' "$out/pytest.txt" | tail -1), exit $pytest_rc"
    echo
    cat "$out/commands.md"
} > "$out/summary.md"
echo "results: $out/summary.md"
exit "$pytest_rc"
