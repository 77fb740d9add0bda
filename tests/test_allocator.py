"""memsave.allocator: with freed memory kept, allocating and freeing large arrays again stops
faulting pages in (measured in a fresh process: the setting is process-wide)."""
import subprocess
import sys

import pytest

PROGRAM = """
import resource, numpy as np, memsave.allocator as al

def faults(rounds=20):
    start = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(rounds):
        arrays = [np.ones(1 << 20) for _ in range(4)]   # 4 x 8 MiB, written
        del arrays
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - start

faults(2)
before = faults()
applied = al.keep_freed_memory()
faults(2)
print(applied, before, faults())
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc only")
def test_keeping_freed_memory_stops_the_page_faults_of_repeated_large_arrays():
    out = subprocess.run([sys.executable, "-c", PROGRAM], capture_output=True, text=True,
                         check=True).stdout.split()
    applied, before, after = out[0] == "True", int(out[1]), int(out[2])
    if not applied:
        pytest.skip("malloc is not glibc's here")
    # 20 rounds of 4 x 8 MiB are 163,840 pages: by default a good part of them is faulted in
    # again every round (glibc returns some freed memory to the kernel); kept, none is.
    assert before > 10_000
    assert after < before // 20


def test_keep_freed_memory_reports_whether_it_applied():
    from memsave.allocator import keep_freed_memory
    assert keep_freed_memory() in (True, False)
