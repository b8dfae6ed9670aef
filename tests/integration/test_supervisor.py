"""The ``ringwork run`` supervisor's restart policy, with tiny stand-in children (no cluster)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from ringwork.supervisor import Policy, supervise

pytestmark = pytest.mark.slow  # it starts processes


def test_a_slot_that_keeps_dying_backs_off_then_gives_up(
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv = [sys.executable, "-c", "import sys; sys.exit(3)"]
    code = supervise(argv, 1, Policy(backoff=0.05, max_backoff=0.1, limit=3, window=60))
    err = capsys.readouterr().err
    assert code == 1
    assert err.count("exited with code 3") == 4, err  # the first run and 3 restarts
    delays = [line.rsplit("restarting it in ", 1)[1] for line in err.splitlines()
              if "restarting it in" in line]
    assert delays == ["0.05 s", "0.1 s", "0.1 s"], err  # doubling, capped
    assert "ERROR:" in err and "not restarting slot 0" in err, err


def test_a_slot_whose_worker_died_once_is_restarted(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    marker = tmp_path / "died-once"
    script = (f"import os, sys\np = {str(marker)!r}\nif os.path.exists(p): sys.exit(0)\n"
              "open(p, 'w').close(); os.kill(os.getpid(), 9)")
    code = supervise([sys.executable, "-c", script], 1, Policy(backoff=0.05))
    err = capsys.readouterr().err
    assert err.count("killed by SIGKILL") == 1 and err.count("restarted slot") == 1, err
    assert code == 0, err  # the restarted worker stopped cleanly


def test_a_shutdown_signal_while_a_restart_is_being_scheduled_still_ends_the_run() -> None:
    """The signal handler may run between ``_died``'s check of ``stopping`` and its setting of
    ``start_at``: that restart never happens, and must not keep the supervisor waiting for it."""
    import subprocess
    import threading

    from ringwork.supervisor import Slot, Supervisor

    class SignalledMidway(Supervisor):
        def _died(self, slot: Slot, child: subprocess.Popen[bytes], now: float) -> None:
            super()._died(slot, child, now)
            self.stopping = True  # as if SIGTERM came just before start_at was set

    runner = SignalledMidway([sys.executable, "-c", "import sys; sys.exit(3)"], 1,
                             Policy(backoff=30.0))
    codes: list[int] = []
    thread = threading.Thread(target=lambda: codes.append(runner._supervise()), daemon=True)
    thread.start()
    thread.join(10)
    assert not thread.is_alive(), "the supervisor kept waiting for a restart it never starts"
    assert codes == [1]


def test_each_slot_gets_its_own_arguments_and_keeps_them_on_restart(tmp_path: Path) -> None:
    """``ringwork run`` gives each worker its own metrics port (base + slot) this way."""
    script = ("import os, sys\nout, slot = sys.argv[1], sys.argv[2]\n"
              "p = os.path.join(out, 'slot' + slot)\nfirst = not os.path.exists(p)\n"
              "open(p, 'a').write(slot + '\\n')\n"
              "if first and slot == '1': os.kill(os.getpid(), 9)")
    code = supervise([sys.executable, "-c", script, str(tmp_path)], 2, Policy(backoff=0.05),
                     slot_args=lambda i: [str(i)])
    assert code == 0
    assert (tmp_path / "slot0").read_text() == "0\n"
    assert (tmp_path / "slot1").read_text() == "1\n1\n"  # restarted with the same arguments
