"""The fleet benchmark's CPU probe counts processes too short-lived to be sampled: a client without a connection
pool makes Postgres fork a backend per query, and those backends live for milliseconds."""

from __future__ import annotations

import json
import subprocess
import sys

from kobi_cpas.devenv.fleet_bench_probe import ProcessProbe

# A parent that starts short busy children one after another, waits for each, then reports its own and its
# children's CPU as the kernel accounts them.
_PARENT = r"""
import os, subprocess, sys
child = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.03: pass"
sys.stdin.readline()
for _ in range(25):
    subprocess.run([sys.executable, "-S", "-c", child], check=True)
t = os.times()
print(t.user + t.system + t.children_user + t.children_system, flush=True)
sys.stdin.readline()
"""


def test_children_that_exit_between_samples_are_counted_through_their_parent():
    parent = subprocess.Popen(
        [sys.executable, "-c", _PARENT], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        # Sampled far less often than a child lives: each child is seen alive at most once, if at all.
        probe = ProcessProbe({"postgres": parent.pid}, interval=60)
        probe.sample()
        before = probe.cpu_by_group().get("postgres", 0.0)
        assert parent.stdin is not None and parent.stdout is not None
        parent.stdin.write("go\n")
        parent.stdin.flush()
        kernel_total = float(parent.stdout.readline())
        probe.sample()
        counted = probe.cpu_by_group()["postgres"] - before
    finally:
        parent.communicate("done\n", timeout=30)
    # 25 children of >= 30 ms each: at least 0.75 s, all of it in the parent's reaped time.
    assert kernel_total >= 0.75, json.dumps({"kernel_total": kernel_total})
    # The probe sees what the kernel accounted, within a clock tick per process.
    assert abs(counted - kernel_total) <= 0.1, (counted, kernel_total)
