"""The SQL store: jobs, partition epochs, leader terms and the node registry (SQLAlchemy Core).

Public names: :class:`Store` (the facade everything else codes against), :class:`NodeRecord`,
:class:`Listener` (PostgreSQL LISTEN wake-ups). :mod:`ringwork.store.migrate` has the
``upgrade``/``current`` functions the CLI calls. See ``docs/store.md``.
"""

from ringwork.store.listen import Listener
from ringwork.store.referee import NodeRecord
from ringwork.store.store import Store

__all__ = ["Listener", "NodeRecord", "Store"]
