"""The worker translates its settings into protocol timings through ``for_session``."""

from __future__ import annotations

from ringwork.protocol.config import ProtocolConfig
from ringwork.settings import Settings
from ringwork.worker import protocol_config


def test_a_longer_session_scales_the_margins_and_keeps_the_rest() -> None:
    config = protocol_config(Settings(session_timeout=6.0, heartbeat_interval=1.0,
                                      revoke_timeout=4.0, cluster="c", partitions=16))
    base = ProtocolConfig()
    assert (config.cluster, config.partitions) == ("c", 16)
    assert config.session_timeout == 6.0 and config.heartbeat_interval == 1.0
    assert config.revoke_timeout == 4.0
    assert config.lease_margin == 2 * base.lease_margin
    assert config.leader_lease == 2 * base.leader_lease
    assert config.poll_interval == 2 * base.poll_interval
    assert config.election_backoff == 2 * base.election_backoff
    assert ProtocolConfig.for_session(session_timeout=base.session_timeout) == base
