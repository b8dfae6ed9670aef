"""The node name setting (static membership): what a name may be, wherever it comes from."""

from __future__ import annotations

import pytest

from ringwork.errors import ConfigurationError
from ringwork.settings import Settings


@pytest.mark.parametrize("name", ["", "a", "web-1", "pod_7.eu-west", "9", "n" * 64])
def test_good_names(name: str) -> None:
    assert Settings(node_name=name).replace(concurrency=1).node_name == name
    assert Settings().with_environment({"RINGWORK_NODE_NAME": name}).node_name == name


@pytest.mark.parametrize(
    ("name", "fragment"),
    [
        ("a b", "letters, digits"),
        ("a/b", "letters, digits"),
        ("-a", "starting with a letter or digit"),
        (".hidden", "starting with a letter or digit"),
        ("naïve", "letters, digits"),
        ("a\nb", "letters, digits"),
        ("n" * 65, "at most 64 characters, not 65"),
    ],
)
def test_bad_names_are_one_line_errors(name: str, fragment: str) -> None:
    with pytest.raises(ConfigurationError, match=fragment) as caught:
        Settings().replace(node_name=name)
    assert "\n" not in str(caught.value).replace(repr(name), "")
    with pytest.raises(ConfigurationError, match="RINGWORK_NODE_NAME"):
        Settings().with_environment({"RINGWORK_NODE_NAME": name})
