"""The ring protocol: a sans-IO core, the sticky assignor, the wire messages and their codec.

The driver uses :class:`ringwork.protocol.core.Core` (``handle(now, event) -> actions``,
``claimable(now)``, ``next_deadline()``), the events and actions in
:mod:`ringwork.protocol.events`, :func:`ringwork.protocol.operations.perform` to run referee
actions, and :class:`ringwork.protocol.messages.Codec` on the wire. See docs/protocol.md.

Nothing is imported here on purpose: the store imports :mod:`ringwork.protocol.referee` and
should not pull the state machine in with it.
"""
