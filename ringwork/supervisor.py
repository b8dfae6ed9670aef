"""``ringwork run``: N worker processes as one local cluster; a worker that dies is restarted.

Why restart: a worker that dies (a crash, ``kill -9``, the OOM killer, exit code 70 after its node
loop failed) leaves the local cluster one node short for good, and with one process nothing runs
at all. The cluster already survives the death -- the partitions move to the survivors and the
in-flight jobs run again -- so a fresh process simply joins as a new member.

Why not blindly: a worker that dies again at once (a bad app, a database that refuses it) would
otherwise be restarted in a tight loop that hides the cause and burns the machine. So restarts of
a slot back off exponentially (``backoff`` doubling up to ``max_backoff``), and after ``limit``
restarts within ``window`` seconds the supervisor says so loudly, stops restarting that slot, and
exits non-zero once the rest stop. Every death is reported on stderr, restarted or not.

What is not a death: a worker that exits 0 stopped gracefully (someone sent it SIGTERM); its slot
stays empty. SIGTERM/SIGINT to the supervisor are forwarded to every running worker and end the
run: nothing is restarted during the shutdown. The exit code is 0 only if no slot gave up and the
last worker of every slot exited 0.
"""

from __future__ import annotations

import collections
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import FrameType


@dataclass
class Slot:
    """One of the N worker positions; its process changes on every restart."""

    number: int
    child: subprocess.Popen[bytes] | None = None
    restarts: collections.deque[float] = field(default_factory=collections.deque)
    start_at: float | None = None  # a restart is due at this monotonic time
    last_code: int | None = None
    gave_up: bool = False


def _describe(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exited with code {code}"


def _say(text: str) -> None:
    print(f"ringwork run: {text}", file=sys.stderr, flush=True)


@dataclass
class Policy:
    """When a slot restarts: after ``backoff`` doubling to ``max_backoff`` seconds, and at most
    ``limit`` times within ``window`` seconds."""

    backoff: float = 0.5
    max_backoff: float = 10.0
    limit: int = 5
    window: float = 60.0


def supervise(argv: list[str], processes: int, policy: Policy | None = None,
              slot_args: Callable[[int], list[str]] | None = None) -> int:
    """Run ``processes`` copies of ``argv`` until they stop; returns the run's exit code.

    ``slot_args(n)``: arguments appended for slot ``n`` (its own metrics port), the same for
    every process that slot starts."""
    return Supervisor(argv, processes, policy or Policy(), slot_args).run()


class Supervisor:
    """Runs on the main thread; its signal handlers only set a flag and forward the signal."""

    def __init__(self, argv: list[str], processes: int, policy: Policy,
                 slot_args: Callable[[int], list[str]] | None = None) -> None:
        self.argv = argv
        self.slot_args = slot_args
        self.policy = policy
        self.slots = [Slot(i) for i in range(processes)]
        self.stopping = False

    def run(self) -> int:
        signals = (signal.SIGTERM, signal.SIGINT)
        previous = {sig: signal.signal(sig, self._forward) for sig in signals}
        try:
            return self._supervise()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _supervise(self) -> int:
        for slot in self.slots:
            self._spawn(slot)
        _say(f"started {len(self.slots)} workers: "
             + ", ".join(str(s.child.pid) for s in self.slots if s.child is not None))
        while True:
            now = time.monotonic()
            for slot in self.slots:
                child = slot.child
                if child is not None and child.poll() is not None:
                    slot.child, slot.last_code = None, child.returncode
                    self._died(slot, child, now)
                if slot.start_at is not None and now >= slot.start_at and not self.stopping:
                    self._spawn(slot)
                    assert slot.child is not None
                    _say(f"restarted slot {slot.number}: worker {slot.child.pid}"
                         f" ({len(slot.restarts)} restarts in the last {self.policy.window:g} s)")
            # A restart still due counts only while not stopping: the signal handler may have
            # cleared start_at just before _died set it, and that restart never comes.
            if all(s.child is None and (s.start_at is None or self.stopping) for s in self.slots):
                break
            time.sleep(0.1)
        failed = any(s.gave_up or s.last_code != 0 for s in self.slots)
        return 1 if failed else 0

    def _spawn(self, slot: Slot) -> None:
        # Each child in its own session: a Ctrl-C in the terminal reaches only the supervisor,
        # which forwards it once (a worker takes a second signal as "exit now").
        argv = self.argv if self.slot_args is None else [*self.argv,
                                                          *self.slot_args(slot.number)]
        slot.child = subprocess.Popen(argv, start_new_session=True)
        slot.start_at = None
        if self.stopping:  # the signal came while we were starting it
            slot.child.send_signal(signal.SIGTERM)

    def _forward(self, signum: int, _frame: FrameType | None) -> None:
        self.stopping = True
        for slot in self.slots:
            slot.start_at = None  # no restarts during a shutdown
            if slot.child is not None and slot.child.poll() is None:
                slot.child.send_signal(signum)

    def _died(self, slot: Slot, child: subprocess.Popen[bytes], now: float) -> None:
        """Report a worker's exit and decide whether (and when) its slot restarts."""
        policy = self.policy
        running = sum(1 for s in self.slots if s.child is not None)
        what = (f"worker {child.pid} (slot {slot.number}) {_describe(child.returncode)}"
                f" ({running} of {len(self.slots)} running)")
        if self.stopping or child.returncode == 0:
            _say(what)  # part of a shutdown, or a graceful stop of this worker alone
            return
        while slot.restarts and slot.restarts[0] <= now - policy.window:
            slot.restarts.popleft()
        if len(slot.restarts) >= policy.limit:
            slot.gave_up = True
            _say(f"ERROR: {what}; it died {policy.limit + 1} times within {policy.window:g} s:"
                 f" not restarting slot {slot.number} (its log says why)")
            return
        delay = min(policy.max_backoff, policy.backoff * 2 ** len(slot.restarts))
        slot.restarts.append(now)
        slot.start_at = now + delay
        _say(f"{what}; restarting it in {delay:g} s")
