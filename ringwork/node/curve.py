"""The cluster's CURVE key pair: read from the file ``ringwork keys`` writes, applied to sockets.

Every node is both a CURVE server (its ROUTER and PUB) and a client (its DEALERs and SUB) with
the same shared pair, so holding the key file is what admits a process to the cluster. Loaded
once, before the node starts (a bad file is a configuration error at start, not a silent
handshake failure later); applied by whichever thread makes a socket.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import zmq

from ringwork.errors import ConfigurationError


@dataclass(frozen=True)
class CurveKeys:
    """The cluster's shared CURVE key pair (Z85 text). Every node is both server and client."""

    public: bytes
    secret: bytes

    @classmethod
    def generate(cls) -> CurveKeys:
        public, secret = zmq.curve_keypair()
        return cls(public, secret)

    @classmethod
    def load(cls, path: str | Path) -> CurveKeys:
        """Read a file written by ``ringwork keys`` (``public=...`` and ``secret=...`` lines)."""
        try:
            text = Path(path).read_text()
        except FileNotFoundError:
            raise ConfigurationError(
                f"CURVE key file {path} does not exist: fix --curve-key-file, or make the "
                "cluster's key with `ringwork keys -o FILE` and give every worker that file"
            ) from None
        except PermissionError:
            raise ConfigurationError(
                f"cannot read CURVE key file {path}: permission denied (let this user read it)"
            ) from None
        except IsADirectoryError:
            raise ConfigurationError(f"{path} is a directory: name the CURVE key file") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigurationError(f"cannot read CURVE key file {path}: {exc}") from None
        fields = dict(line.split("=", 1) for line in text.splitlines() if "=" in line)
        public = fields.get("public", "").strip().encode()
        secret = fields.get("secret", "").strip().encode()
        if len(public) != 40 or len(secret) != 40:
            raise ConfigurationError(
                f"{path} is not a CURVE key file (expected public= and secret= lines of 40 "
                "Z85 characters, as `ringwork keys -o FILE` writes)"
            )
        return cls(public, secret)

    def dump(self) -> str:
        return f"public={self.public.decode()}\nsecret={self.secret.decode()}\n"

    def server(self, sock: zmq.Socket) -> None:
        sock.curve_secretkey = self.secret
        sock.curve_publickey = self.public
        sock.curve_server = True

    def client(self, sock: zmq.Socket) -> None:
        sock.curve_secretkey = self.secret
        sock.curve_publickey = self.public
        sock.curve_serverkey = self.public
