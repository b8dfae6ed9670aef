"""How a ``ringwork`` command ends when something goes wrong: one line, or quietly.

* A library error (``RingworkError``) and a bad option value (``--revoke-timeout -1``, or a bad
  ``RINGWORK_*`` variable behind an option) become one ``Error: ...`` line and exit code 1, never a
  traceback; so does any other exception, as ``internal error`` (``RINGWORK_DEBUG=1`` shows its
  traceback instead).
* Output whose reader has gone (``ringwork jobs APP list --json | head -1``) ends the command
  quietly with exit code 141, as a Unix tool killed by SIGPIPE ends in a shell: no traceback,
  no error line, whichever command was printing (click's help and rich's tables included).
  Python ignores SIGPIPE so that sockets see EPIPE as an error; we keep it that way, since a
  worker's sockets must not kill the process, and turn the error into the exit instead.

Runs on the main thread of a ``ringwork`` process.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import sys
from collections.abc import Iterator
from typing import Any

import click

from ringwork.cli.variables import equip
from ringwork.errors import RingworkError

#: The exit status a shell reports for a process killed by SIGPIPE (128 + 13).
CLOSED_OUTPUT_EXIT = 128 + signal.SIGPIPE


class RingworkGroup(click.Group):
    """The top-level group: applies the policy above to every command below it."""

    def add_command(self, cmd: click.Command, name: str | None = None) -> None:
        equip(cmd)  # its options' variables shown in --help, the log options its own
        super().add_command(cmd, name)

    def make_context(
        self,
        info_name: str | None,
        args: list[str],
        parent: click.Context | None = None,
        **extra: Any,
    ) -> click.Context:
        # ``--help`` and ``--version`` print while the arguments are parsed, before invoke.
        with closed_output_ends_quietly():
            return super().make_context(info_name, args, parent, **extra)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            with closed_output_ends_quietly():
                return super().invoke(ctx)
        except click.BadParameter as exc:
            if isinstance(exc, click.MissingParameter):
                raise
            # A value that does not parse or is out of range: one line that names the flag (or
            # its variable), like every other mistake; the usage text would not help.
            raise click.ClickException(exc.format_message()) from None
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except RingworkError as exc:
            raise click.ClickException(one_line(exc)) from None
        except KeyboardInterrupt:
            raise click.Abort() from None
        except Exception as exc:
            if os.environ.get("RINGWORK_DEBUG"):
                raise
            raise click.ClickException(
                f"internal error: {type(exc).__name__}: {one_line(exc)} "
                "(set RINGWORK_DEBUG=1 for a traceback)"
            ) from None


def one_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]


@contextlib.contextmanager
def closed_output_ends_quietly() -> Iterator[None]:
    """Turn a ``BrokenPipeError`` on our own stdout/stderr into a quiet exit 141.

    A broken pipe from anything else (a socket deep in a library) stays an error to report.
    """
    try:
        yield
    except BrokenPipeError:
        closed = [fd for fd in (1, 2) if _reader_gone(fd)]
        if not closed:
            raise
        _discard_output(closed)
        raise click.exceptions.Exit(CLOSED_OUTPUT_EXIT) from None


def flush_at_exit() -> None:
    """Flush stdout now, while a closed pipe can still end the process quietly.

    Python flushes it again at shutdown, where a failure prints ``Exception ignored ...``.
    """
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        _discard_output([1])
        sys.exit(CLOSED_OUTPUT_EXIT)
    except (AttributeError, ValueError):  # no stdout, or one already closed
        pass


def _reader_gone(fd: int) -> bool:
    """Linux reports POLLERR on a pipe's write end once every reader has closed it."""
    try:
        poller = select.poll()
        poller.register(fd, select.POLLOUT)
        return any(events & (select.POLLERR | select.POLLHUP) for _, events in poller.poll(0))
    except (OSError, ValueError):
        return False


def _discard_output(fds: list[int]) -> None:
    """Point the closed descriptors at /dev/null, so later flushes (at exit too) succeed."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    for fd in fds:
        os.dup2(devnull, fd)
    os.close(devnull)
