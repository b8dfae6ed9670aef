"""Reading ``/metrics`` in tests, and the metric names docs/metrics.md documents."""

from __future__ import annotations

import re
import urllib.request
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

DOCS = Path(__file__).resolve().parent.parent / "docs"
#: A documented row: | `name` | type | labels | meaning |
_ROW = re.compile(r"^\|\s*`(ringwork_[a-z_]+)`\s*\|\s*(counter|gauge|histogram)\s*\|", re.M)


def scrape(port: int) -> dict[str, list[Sample]]:
    """``{family name: samples}`` as the text parser names families (counters without
    ``_total``); a family with no sample is there with an empty list."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return {f.name: list(f.samples) for f in text_string_to_metric_families(text)}


def value(samples: list[Sample], name: str, **labels: str) -> float | None:
    for s in samples:
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
            return float(s.value)
    return None


def documented() -> dict[str, str]:
    """``{name as PromQL uses it: type}`` from docs/metrics.md (counters end in ``_total``)."""
    return {m.group(1): m.group(2) for m in _ROW.finditer((DOCS / "metrics.md").read_text())}


def family_name(name: str, kind: str) -> str:
    """The parser's family name of a documented metric."""
    return name.removesuffix("_total") if kind == "counter" else name
