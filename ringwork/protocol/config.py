"""Protocol timing and limits: one frozen object, every default justified in docs/protocol.md.

The relations between the timeouts are what make the protocol safe, so they are checked here
rather than trusted:

* a follower's lease (``session_timeout - lease_margin`` from the moment it *sent* the
  acknowledged heartbeat) always ends before the leader's heartcheck can declare it dead
  (``session_timeout`` after it last *received* one): ``lease_margin > 0``;
* the leader's own authority (``leader_lease`` from the moment it issued the last poll that
  confirmed its term) ends before anyone may usurp it: a follower only starts an election once
  the leader's registry row is ``session_timeout`` old, so ``leader_lease <= session_timeout``;
* a revoked partition is handed over without the owner's confirmation only once any lease granted
  before the revocation has run out: the leader waits ``max(revoke_timeout, session_timeout)``;
* degraded mode (a follower that hears no Ack but reaches the database): its lease is
  ``follower_lease`` from *issuing* a poll whose touch succeeded, renewed only while a lease still
  runs and only by a poll answered within ``degraded_poll_budget``; the leader evicts it only when
  a poll it issued after ``session_timeout`` of silence shows its row ``session_timeout`` old.
  The budget is at most ``lease_margin`` (see core.py's docstring for the proof).
"""

from __future__ import annotations

from dataclasses import dataclass

from ringwork.errors import ConfigurationError


@dataclass(frozen=True, kw_only=True)
class ProtocolConfig:
    """Timings (seconds) and limits of the ring protocol. See docs/protocol.md for the why."""

    #: Cluster name, carried on every message; messages from another cluster are dropped.
    cluster: str = "default"
    #: Number of partitions, fixed per cluster.
    partitions: int = 64
    #: Followers heartbeat the leader this often; the leader renews its authority this often.
    heartbeat_interval: float = 0.5
    #: Silence after which the leader declares a follower dead (and a follower suspects the leader).
    session_timeout: float = 3.0
    #: Safety margin subtracted from every lease (clock-rate drift, scheduling jitter).
    lease_margin: float = 0.5
    #: How long a leader may act on one successful poll of the referee that confirmed its term.
    leader_lease: float = 2.5
    #: Membership changes closer together than this are folded into one rebalance ...
    join_debounce: float = 0.5
    #: ... but a rebalance is never postponed more than this after the first change.
    max_debounce: float = 2.0
    #: A revoked partition moves without its owner's confirmation after this long.
    revoke_timeout: float = 10.0
    #: Election: the candidate ranked r among live nodes waits r * election_backoff.
    election_backoff: float = 1.0
    #: A healthy follower refreshes its registry row and view of the term this often.
    poll_interval: float = 1.0
    #: A leaving node gives up waiting for the leader's acknowledgement after this long.
    leave_timeout: float = 5.0
    #: Fast suspicion: a peer whose connection it closed has had every reconnect refused for
    #: this long (and sent nothing) is taken for dead at once, without waiting for
    #: session_timeout (see ringwork.protocol.links); ``inf`` turns it off.
    link_confirm: float = 0.1
    #: Encoded messages larger than this are neither sent nor accepted; it also bounds what a
    #: peer can make a node hold (docs/operations.md). 0 (the default) derives it from the
    #: partition count: 64 KiB plus 128 bytes per partition, room for the largest message (a
    #: ClusterState naming every partition's owner: 464 kB for 4096 partitions and 80-character
    #: node ids, all revoking) with margin; 72 KiB for the default 64 partitions.
    max_message_bytes: int = 0

    def __post_init__(self) -> None:
        if self.max_message_bytes == 0:
            object.__setattr__(self, "max_message_bytes", (64 << 10) + 128 * self.partitions)
        positive = (
            "heartbeat_interval",
            "session_timeout",
            "lease_margin",
            "leader_lease",
            "join_debounce",
            "revoke_timeout",
            "election_backoff",
            "poll_interval",
            "leave_timeout",
        )
        for name in positive:
            if not getattr(self, name) > 0:
                raise ConfigurationError(f"{name} must be positive")
        if not self.link_confirm > 0:
            raise ConfigurationError("link_confirm must be positive (inf: off)")
        if self.partitions < 1:
            raise ConfigurationError("partitions must be at least 1")
        if self.max_message_bytes < 4096:
            raise ConfigurationError("max_message_bytes must be at least 4096")
        if not self.cluster:
            raise ConfigurationError("cluster name must not be empty")
        if self.lease_margin >= self.session_timeout:
            raise ConfigurationError("lease_margin must be smaller than session_timeout")
        if self.leader_lease > self.session_timeout:
            raise ConfigurationError("leader_lease must not exceed session_timeout")
        if self.heartbeat_interval * 2 > self.session_timeout - self.lease_margin:
            raise ConfigurationError(
                "heartbeat_interval too long: at least two heartbeats must fit in a lease"
            )
        if self.heartbeat_interval * 2 > self.leader_lease:
            raise ConfigurationError("leader_lease must cover at least two authority polls")
        if self.max_debounce < self.join_debounce:
            raise ConfigurationError("max_debounce must be at least join_debounce")
        if self.poll_interval >= self.session_timeout:
            raise ConfigurationError("poll_interval must be shorter than session_timeout")

    @classmethod
    def for_session(
        cls,
        *,
        session_timeout: float,
        heartbeat_interval: float | None = None,
        revoke_timeout: float | None = None,
        cluster: str = "default",
        partitions: int = 64,
    ) -> ProtocolConfig:
        """The timings for a chosen session timeout, the rest keeping their proportions.

        The lease margin, the leader's lease, the registry poll and the election backoff scale
        with ``session_timeout``, so the safety relations checked above keep holding; the
        heartbeat interval and the revoke timeout are the caller's (``None``: the defaults).
        The protocol takes plain numbers: whoever reads the user's settings translates them.
        """
        base = cls()
        scale = session_timeout / base.session_timeout
        return cls(
            cluster=cluster,
            partitions=partitions,
            heartbeat_interval=(base.heartbeat_interval if heartbeat_interval is None
                                else heartbeat_interval),
            session_timeout=session_timeout,
            lease_margin=base.lease_margin * scale,
            leader_lease=base.leader_lease * scale,
            poll_interval=base.poll_interval * scale,
            election_backoff=base.election_backoff * scale,
            revoke_timeout=base.revoke_timeout if revoke_timeout is None else revoke_timeout,
        )

    @property
    def follower_lease(self) -> float:
        """How long one acknowledged heartbeat lets a follower claim, from its send time."""
        return self.session_timeout - self.lease_margin

    @property
    def degraded_poll_budget(self) -> float:
        """A poll renews a degraded lease only if answered within this long of being issued."""
        return self.lease_margin / 2

    @property
    def unconfirmed_revoke_wait(self) -> float:
        """How long a revocation waits for the owner's confirmation before handing over."""
        return max(self.revoke_timeout, self.session_timeout)
