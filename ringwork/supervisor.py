"""``ringwork run``: N worker processes as one local cluster, supervised but never restarted.

Restarting a crashed worker silently would hide the crash; the cluster already moves a dead
worker's partitions to the survivors. So the supervisor only forwards SIGTERM/SIGINT to every
child, reports each child that exits, and exits itself when all have (0 only if all exited 0).
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from types import FrameType


def supervise(argv: list[str], processes: int) -> int:
    # Each child in its own session: a Ctrl-C in the terminal reaches only the supervisor, which
    # forwards it once (a worker takes a second signal as "exit now").
    children = [subprocess.Popen(argv, start_new_session=True) for _ in range(processes)]
    print(
        f"ringwork run: started {processes} workers: " + ", ".join(str(c.pid) for c in children),
        file=sys.stderr,
        flush=True,
    )

    def forward(signum: int, _frame: FrameType | None) -> None:
        for child in children:
            if child.poll() is None:
                child.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    reported: set[int] = set()
    codes: list[int] = []
    while len(reported) < len(children):
        for child in children:
            if child.pid not in reported and child.poll() is not None:
                reported.add(child.pid)
                codes.append(child.returncode)
                print(
                    f"ringwork run: worker {child.pid} exited with code {child.returncode}"
                    f" ({len(children) - len(reported)} still running)",
                    file=sys.stderr,
                    flush=True,
                )
        time.sleep(0.1)
    return 0 if all(code == 0 for code in codes) else 1
