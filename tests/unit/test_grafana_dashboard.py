"""docs/grafana-dashboard.json is built on the documented metric names only (docs/metrics.md);
``tests/integration/test_metrics_scrape.py`` checks that every documented name is exported."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

from tests.metrics_support import DOCS, documented

_NAME = re.compile(r"\bringwork_[a-z_]+\b")
_HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


def _queries(node: Any) -> Iterator[str]:
    """Every PromQL text in the dashboard: panel targets' ``expr`` and variables' queries."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("expr", "query", "definition") and isinstance(value, str):
                yield value
            else:
                yield from _queries(value)
    elif isinstance(node, list):
        for item in node:
            yield from _queries(item)


def _documented_base(name: str, docs: dict[str, str]) -> bool:
    if name in docs:
        return docs[name] != "histogram"  # a histogram is queried through its series
    for suffix in _HISTOGRAM_SUFFIXES:
        base = name.removesuffix(suffix)
        if base != name and docs.get(base) == "histogram":
            return True
    return False


def test_every_expression_uses_documented_metric_names_only() -> None:
    docs = documented()
    assert len(docs) >= 20, "docs/metrics.md lost its tables?"
    dashboard = json.loads((DOCS / "grafana-dashboard.json").read_text())
    queries = list(_queries(dashboard["panels"])) + list(_queries(dashboard["templating"]))
    assert len(queries) >= 20
    used = {name for q in queries for name in _NAME.findall(q)}
    unknown = sorted(n for n in used if not _documented_base(n, docs))
    assert not unknown, f"not in docs/metrics.md: {unknown}"
    # And the dashboard shows every documented family at least once.
    shown = {n for n in used} | {n.rsplit("_", 1)[0] for n in used}
    unshown = sorted(n for n in docs if n not in shown)
    assert not unshown, f"documented but on no panel: {unshown}"
