"""The gateway process keeps freed memory for the next messages (`gateway.server.keep_freed_memory`):
message-sized blocks are then reused from the heap, instead of each being mapped afresh or the heap
trimmed under it, which is what costs page faults."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# Reads of 100-260 KB, a few alive at once as messages in flight are; after each, glibc's own account
# (mallinfo2) says whether a block was mapped afresh (hblks grew) or the heap trimmed (arena shrank).
# Prints how many times each happened, after `keep_freed_memory()` when asked to.
MESSAGES = """
import ctypes, os, sys
class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]
libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = MallInfo2
if sys.argv[1] == "keep":
    from gateway.server import keep_freed_memory
    assert keep_freed_memory(), "the C library refused the settings"
source = os.urandom(300_000)
live = []
mapped = trimmed = 0
last = libc.mallinfo2()
for i in range(2000):
    live.append(source[: 100_000 + (i * 7919) % 160_000])
    if len(live) > 6:
        live.pop(0)
    now = libc.mallinfo2()
    mapped += now.hblks > last.hblks
    trimmed += now.arena < last.arena
    last = now
print(mapped, trimmed)
"""


def _allocator_events(mode: str) -> tuple[int, int]:
    """(blocks mapped afresh, heap trims) while 2000 message-sized blocks come and go."""
    out = subprocess.run([sys.executable, "-c", MESSAGES, mode], cwd=ROOT, capture_output=True, text=True,
                         check=True, timeout=60)
    mapped, trimmed = out.stdout.split()
    return int(mapped), int(trimmed)


def test_message_sized_blocks_are_reused_instead_of_mapped_afresh():
    # glibc's defaults map some of these blocks afresh and trim the heap under others, again and again;
    # with the gateway's settings every block comes from heap that stays mapped.
    default = _allocator_events("default")
    assert sum(default) > 0, "glibc's defaults no longer map or trim: this test cannot tell the difference"
    assert _allocator_events("keep") == (0, 0)
