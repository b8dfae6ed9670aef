"""The SQL store: jobs, partition epochs, leader terms and the node registry (SQLAlchemy Core).

Public names: :class:`Store` (the facade everything else codes against), :class:`AsyncClaimer`
(what ``Store.claimer()`` returns: the claim on an event loop), :class:`Listener` (PostgreSQL
LISTEN wake-ups, from ``Store.listen()``) and :class:`NodeRecord` (a registry row; the
protocol's record, re-exported). :mod:`ringwork.store.migrate` has the ``upgrade``/``current``
functions the CLI calls. The modules are cut by concept; ``docs/store.md`` maps them.
"""

from ringwork.protocol.referee import NodeRecord
from ringwork.store.claim_async import AsyncClaimer
from ringwork.store.listen import Listener
from ringwork.store.store import Store

__all__ = ["AsyncClaimer", "Listener", "NodeRecord", "Store"]
