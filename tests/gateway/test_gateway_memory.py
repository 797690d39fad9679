"""The gateway process keeps freed memory for the next messages (`gateway.server.keep_freed_memory`):
allocating and freeing message-sized blocks then costs next to no page faults."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# Reads of 100-260 KB, a few alive at once as messages in flight are; prints the minor page faults
# per 1000 of them, after `keep_freed_memory()` when asked to.
MESSAGES = """
import os, resource, sys
if sys.argv[1] == "keep":
    from gateway.server import keep_freed_memory
    assert keep_freed_memory(), "the C library refused the settings"
source = os.urandom(300_000)
live = []
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for i in range(2000):
    live.append(source[: 100_000 + (i * 7919) % 160_000])
    if len(live) > 6:
        live.pop(0)
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 2)
"""


def _faults_per_1000(mode: str) -> float:
    out = subprocess.run([sys.executable, "-c", MESSAGES, mode], cwd=ROOT, capture_output=True, text=True,
                         check=True, timeout=60)
    return float(out.stdout)


def test_message_sized_blocks_are_reused_instead_of_mapped_afresh():
    default, kept = _faults_per_1000("default"), _faults_per_1000("keep")
    # glibc's defaults fault in most pages of every block again (tens per block); kept, nearly none.
    assert kept < default / 5, (default, kept)
