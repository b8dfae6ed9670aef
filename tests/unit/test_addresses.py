"""Bind addresses, the ports derived from them, and the sentences for failed binds."""

from __future__ import annotations

import errno

import pytest

from ringwork.addresses import NEXT_PORT, BindAddress, bind_error, socket_ports
from ringwork.errors import ConfigurationError
from ringwork.settings import Settings


def test_parse() -> None:
    assert BindAddress.parse("tcp://10.0.0.5:7000") == BindAddress("10.0.0.5", 7000)
    assert BindAddress.parse("tcp://*:*") == BindAddress("*", None)
    assert BindAddress.parse("tcp://0.0.0.0:0").port is None
    assert BindAddress.parse("tcp://[::1]:7000") == BindAddress("[::1]", 7000)
    assert BindAddress.parse("tcp://*:7000").socket_host == "0.0.0.0"
    for bad in ("foo", "tcp://", "tcp://:7000", "tcp://h:", "tcp://h:-1", "http://h:1",
                "tcp://h:65536", "tcp://[::1:7000"):
        with pytest.raises(ConfigurationError):
            BindAddress.parse(bad)


def test_pub_port_follows_the_bind_port() -> None:
    assert socket_ports(BindAddress("h", 7000)) == (7000, 7001)
    assert socket_ports(BindAddress("h", None)) == (None, None)
    assert socket_ports(BindAddress("h", 7000), 9000) == (7000, 9000)
    assert socket_ports(BindAddress("h", 7000), 0) == (7000, None)
    assert socket_ports(BindAddress("h", None), 9000) == (None, 9000)
    with pytest.raises(ConfigurationError, match="--pub-port"):
        socket_ports(BindAddress("h", 65535))
    with pytest.raises(ConfigurationError, match="is the --bind port"):
        socket_ports(BindAddress("h", 7000), 7000)
    assert Settings().pub_port == NEXT_PORT


def test_settings_check_bind_and_pub_port() -> None:
    with pytest.raises(ConfigurationError, match="--bind"):
        Settings().replace(bind="localhost")
    env = Settings().with_environment({"RINGWORK_PUB_PORT": "7100",
                                       "RINGWORK_BIND": "tcp://127.0.0.1:7000"})
    assert socket_ports(BindAddress.parse(env.bind), env.pub_port) == (7000, 7100)


@pytest.mark.parametrize(("code", "fragment"), [
    (errno.EADDRNOTAVAIL, "no address"),
    (errno.EADDRINUSE, "already in use"),
    (errno.EACCES, "choose a port of 1024 or above"),
])
def test_bind_errors_name_the_cause(code: int, fragment: str) -> None:
    error = bind_error("--bind", "10.9.9.9", 80, OSError(code, "os text"))
    assert fragment in str(error) and "10.9.9.9:80" in str(error)
