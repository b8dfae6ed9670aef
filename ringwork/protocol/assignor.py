"""The sticky assignor: members + previous assignment -> new assignment, as a pure function.

Three properties, each checked by property tests (tests/unit/test_assignor.py):

* **balanced**: with ``N`` members and ``P`` partitions every member gets ``floor(P/N)`` or
  ``ceil(P/N)`` partitions (exactly ``P mod N`` of them get the ceiling);
* **sticky / minimal movement**: a member keeps what it holds up to its quota, so the number of
  partitions that change owner is the least any balanced assignment could achieve:
  ``orphans + sum(max(0, held_i - floor)) - min(P mod N, #{i : held_i > floor})``
  (the ceiling quotas go to the members that hold the most, so they give up the least);
* **deterministic**: the result depends only on the inputs (ties broken by member id, then by
  partition number), so every leader computes the same assignment from the same state.

It runs in ``O(P + N log N)``: 256 members x 4096 partitions takes about a millisecond.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping


def assign(
    members: Iterable[str],
    previous: Mapping[int, str | None],
    partitions: int,
) -> dict[int, str | None]:
    """A balanced, sticky assignment of ``range(partitions)`` to ``members``.

    ``previous`` maps partitions to their current owner; owners that are not members (dead, left)
    and partitions missing from it count as orphans. With no members every partition maps to
    ``None``.
    """
    ordered = sorted(set(members))
    if not ordered:
        return dict.fromkeys(range(partitions))
    base, extra = divmod(partitions, len(ordered))

    held: dict[str, list[int]] = {m: [] for m in ordered}
    orphans: list[int] = []
    for p in range(partitions):
        owner = previous.get(p)
        if owner is not None and owner in held:
            held[owner].append(p)
        else:
            orphans.append(p)

    # The ceiling quotas go to the members holding the most (they give up the least); ties by id.
    by_holding = sorted(ordered, key=lambda m: (-len(held[m]), m))
    quota = {m: base + (1 if i < extra else 0) for i, m in enumerate(by_holding)}

    result: dict[int, str | None] = {}
    free = orphans
    for m in ordered:
        keep = held[m][: quota[m]]  # keep the lowest-numbered ones: deterministic
        free.extend(held[m][quota[m] :])
        for p in keep:
            result[p] = m
    free.sort()
    it = iter(free)
    for m in ordered:
        for _ in range(quota[m] - min(len(held[m]), quota[m])):
            result[next(it)] = m
    return result


def moved(before: Mapping[int, str | None], after: Mapping[int, str | None]) -> int:
    """How many partitions changed owner (an orphan getting an owner counts as a move)."""
    return sum(1 for p, owner in after.items() if before.get(p) != owner)


def minimum_moves(
    members: Iterable[str], previous: Mapping[int, str | None], partitions: int
) -> int:
    """The least number of owner changes any balanced assignment needs from ``previous``."""
    ordered = sorted(set(members))
    if not ordered:
        return sum(1 for p in range(partitions) if previous.get(p) is not None)
    base, extra = divmod(partitions, len(ordered))
    counts = dict.fromkeys(ordered, 0)
    orphans = 0
    for p in range(partitions):
        owner = previous.get(p)
        if owner in counts:
            counts[owner] += 1
        else:
            orphans += 1
    over = [c for c in counts.values() if c > base]
    return orphans + sum(c - base for c in over) - min(extra, len(over))
