"""The node counts the new terms it sees (``ringwork_term_changes_total``): every term after its
first, however many role changes a term brings."""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any

from ringwork.node.actions import Actions
from ringwork.node.driver import NODE_COUNTERS
from ringwork.protocol import events as ev


class _Own:
    def follow(self, target: Any) -> None: ...


class _Registry:
    def pub_endpoint_of(self, node: str) -> str | None:
        return None


def test_term_changes_count_new_terms_after_the_first() -> None:
    counters: Counter[str] = Counter(dict.fromkeys(NODE_COUNTERS, 0))
    actions = Actions("n1", None, _Own(), None, None, _Registry(), None,  # type: ignore[arg-type]
                      counters, threading.Event())
    for role, term in [("follower", 3), ("leader", 3), ("follower", 4), ("follower", 4),
                       ("leader", 6)]:
        actions.perform(ev.RoleChanged(role=role, term=term, leader="n2"))
    assert counters["term_changes"] == 2
