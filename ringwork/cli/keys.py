"""``ringwork keys``: the cluster's CURVE key pair, written to a private file.

Runs on the main thread of a ``ringwork`` process.
"""

from __future__ import annotations

import json
import os

import click

from ringwork.cli.options import json_option
from ringwork.errors import ConfigurationError


@click.command()
@click.option(
    "--output",
    "-o",
    type=click.Path(dir_okay=False),
    required=True,
    help="File to write the cluster key pair to (mode 0600).",
)
@click.option(
    "--force", is_flag=True, help="Replace an existing file (its old key stops working)."
)
@json_option("Print {\"path\": ..., \"public_key\": ...} as one JSON object.")
def keys(output: str, force: bool, as_json: bool) -> None:
    """Generate a CURVE key pair that encrypts and authenticates the cluster's sockets.

    Give every worker the same file with --curve-key-file (or RINGWORK_CURVE_KEY_FILE).
    """
    from ringwork.node import CurveKeys

    pair = CurveKeys.generate()
    write_private_file(output, pair.dump(), replace=force)
    if as_json:
        public = pair.public.decode()
        click.echo(json.dumps({"path": os.path.abspath(output), "public_key": public}))
    else:
        click.echo(f"wrote {output}")


def write_private_file(path: str, text: str, *, replace: bool) -> None:
    """Write ``text`` to a new mode-0600 file; the OS's refusal becomes a sentence to act on.

    An existing file is kept unless ``replace``: overwriting a cluster's key by accident would
    cut every worker still using the old one off from those using the new one.
    """
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if replace else os.O_EXCL)
    parent = os.path.dirname(path) or "."
    try:
        fd = os.open(path, flags, 0o600)
    except FileExistsError:
        raise ConfigurationError(
            f"{path} already exists: choose another file, or pass --force to replace it "
            "(workers still using the old key can no longer talk to the others)"
        ) from None
    except FileNotFoundError:
        raise ConfigurationError(
            f"cannot write {path}: directory {parent!r} does not exist (create it first)"
        ) from None
    except PermissionError:
        raise ConfigurationError(
            f"cannot write {path}: permission denied (choose a directory you can write to)"
        ) from None
    except IsADirectoryError:
        raise ConfigurationError(f"cannot write {path}: it is a directory; name a file") from None
    except NotADirectoryError:
        raise ConfigurationError(
            f"cannot write {path}: a part of {parent!r} is a file, not a directory"
        ) from None
    except OSError as exc:
        raise ConfigurationError(f"cannot write {path}: {exc.strerror or exc}") from None
    with os.fdopen(fd, "w") as f:
        f.write(text)
