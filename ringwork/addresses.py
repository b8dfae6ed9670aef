"""The addresses a worker listens on: parsing ``--bind``, choosing ports, explaining failures.

A worker listens on up to four ports of its bind host. Two are ZeroMQ TCP sockets that peers on
other hosts must reach, so their ports are predictable: the ROUTER on the ``--bind`` port and the
PUB on the next port (or ``--pub-port``). Only a bind port of ``*`` or ``0`` means "any free
port" for both. The UDP wake-up socket always takes a free port (nudges are for SQLite, where
every worker is on one host), and the metrics port is whatever ``--metrics-port`` says.

Binding is where a user's mistake meets the operating system, so this module also turns the
OS's errno into a sentence that says what to change (:func:`bind_error`), for all of them.
"""

from __future__ import annotations

import errno
import socket
from dataclasses import dataclass

from ringwork.errors import ConfigurationError

#: ``pub_port`` meaning "the bind port + 1" (or a free port when the bind port is free too).
NEXT_PORT = -1
BIND_FORM = "tcp://HOST:PORT (PORT a number, or * for any free port)"


@dataclass(frozen=True)
class BindAddress:
    """``tcp://HOST:PORT`` split up; ``port`` is ``None`` for ``*`` or ``0`` (any free port)."""

    host: str
    port: int | None

    @classmethod
    def parse(cls, text: str, option: str = "--bind") -> BindAddress:
        scheme, sep, rest = text.partition("://")
        if not sep or scheme != "tcp" or ":" not in rest:
            raise ConfigurationError(f"{option} must look like {BIND_FORM}, not {text!r}")
        host, _, port_text = rest.rpartition(":")
        if not host or (host.startswith("[") != host.endswith("]")):
            raise ConfigurationError(f"{option} {text!r} has no host: use {BIND_FORM}")
        if port_text in ("*", "0"):
            return cls(host, None)
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise ConfigurationError(
                f"{option} {text!r}: the port must be 1-65535 or *, not {port_text!r}"
            )
        return cls(host, int(port_text))

    def url(self, port: int | None) -> str:
        return f"tcp://{self.host}:{'*' if port is None else port}"

    @property
    def socket_host(self) -> str:
        """The host as the ``socket`` module wants it (``*`` -> all interfaces)."""
        return "0.0.0.0" if self.host == "*" else self.host.strip("[]")


def socket_ports(bind: BindAddress, pub_port: int = NEXT_PORT) -> tuple[int | None, int | None]:
    """``(router_port, pub_port)`` for a bind address; ``None`` means any free port."""
    if pub_port == NEXT_PORT:
        if bind.port is None:
            return None, None
        if bind.port == 65535:
            raise ConfigurationError(
                "--bind port 65535 leaves no next port for the PUB socket: pass --pub-port"
            )
        return bind.port, bind.port + 1
    if not 0 <= pub_port < 65536:
        raise ConfigurationError(f"--pub-port must be 0-65535, not {pub_port}")
    chosen = pub_port or None
    if chosen is not None and chosen == bind.port:
        raise ConfigurationError(f"--pub-port {pub_port} is the --bind port: pick another")
    return bind.port, chosen


def bind_error(what: str, host: str, port: int | None, exc: BaseException) -> ConfigurationError:
    """A one-line, actionable error for a failed bind of ``what`` (e.g. ``"--bind"``)."""
    code = getattr(exc, "errno", None)
    where = f"{host}:{port if port else '*'}"
    if isinstance(exc, socket.gaierror):
        reason = f"cannot resolve host {host!r}: give an IP address or a resolvable name"
    elif code == errno.EADDRNOTAVAIL:
        reason = (
            f"this host has no address {host}: bind one of its own addresses, or "
            "tcp://0.0.0.0:PORT with --advertise HOST"
        )
    elif code == errno.EADDRINUSE:
        reason = f"port {port} is already in use on {host}: stop what holds it or choose another"
    elif code == errno.EACCES:
        reason = (
            f"permission denied for port {port} (ports below 1024 need root or "
            "CAP_NET_BIND_SERVICE): choose a port of 1024 or above"
        )
    elif code in (errno.EINVAL, errno.ENODEV, errno.EAFNOSUPPORT):
        reason = f"{host!r} is not an address this host can listen on ({exc})"
    else:
        reason = str(exc) or type(exc).__name__
    return ConfigurationError(f"cannot listen on {where} ({what}): {reason}")
