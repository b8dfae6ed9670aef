"""The ring protocol: a sans-IO core, the sticky assignor, the wire messages and their codec.

The driver uses :class:`Core` (``handle(now, event) -> actions``, ``claimable(now)``,
``next_deadline()``), the events and actions in :mod:`ringwork.protocol.events`,
:func:`perform` to run referee actions, and :class:`Codec` on the wire. See docs/protocol.md.
"""

from ringwork.protocol.assignor import assign
from ringwork.protocol.config import ProtocolConfig
from ringwork.protocol.core import Core
from ringwork.protocol.messages import PROTOCOL_VERSION, Codec
from ringwork.protocol.operations import perform

__all__ = ["PROTOCOL_VERSION", "Codec", "Core", "ProtocolConfig", "assign", "perform"]
