"""A revocation that arrives while a claiming round is out: confirmed only after that round."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from typing import Any

import pytest

from ringwork import App, Job
from ringwork.coordinator import PartitionListener
from ringwork.worker import Worker
from tests.support import own_all, wait_for


@pytest.fixture
def app(db_url: str, cluster_name: str) -> Iterator[App]:
    app = App(database_url=db_url, partitions=4, cluster=cluster_name)
    app.configure(concurrency=2, poll_interval=5.0)
    yield app
    app.close()


class Revocable:
    """A coordinator that owns every partition until the test revokes one."""

    node_id = "node-a"

    def __init__(self, app: App) -> None:
        self.app = app
        self.epochs = own_all(app.store, self.node_id)
        self.listener: PartitionListener | None = None
        self.confirmed: list[tuple[frozenset[int], list[str]]] = []
        self.watch: list[int] = []

    def start(self, listener: PartitionListener, wake_endpoint: str | None) -> None:
        self.listener = listener

    def claimable(self) -> Mapping[int, int]:
        return dict(self.epochs)

    def revoke(self, partition: int) -> None:
        del self.epochs[partition]
        assert self.listener is not None
        self.listener("revoked", frozenset({partition}))

    def revoke_done(self, partitions: frozenset[int]) -> None:
        states = [self.app.get_job(i).state for i in self.watch]  # type: ignore[union-attr]
        self.confirmed.append((partitions, states))

    def begin_leave(self) -> None:
        pass

    def stop(self) -> None:
        pass

    def failure(self) -> str | None:
        return None


# On PostgreSQL a claim alone goes through the async claimer, not the exchange held here; the
# rule itself is the ledger's, tested without a database in tests/unit/test_worker_pump.py.
@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_a_revocation_during_a_claim_round_waits_for_what_it_claims(app: App) -> None:
    """Confirmed while the round is out, the partition would move to its next owner at a new
    epoch while this worker may still claim there (the round is a claim under the old one)."""
    ran: list[int] = []

    @app.task("t")
    def t(job: Job) -> None:
        ran.append(job.id)

    job_id = app.enqueue("t", "k")
    partition = app.get_job(job_id).partition  # type: ignore[union-attr]
    coordinator = Revocable(app)
    coordinator.watch = [job_id]
    worker = Worker(app, coordinator=coordinator)
    entered, release = threading.Event(), threading.Event()
    real = worker.writes

    class HeldRound:
        def __getattr__(self, name: str) -> Any:
            return getattr(real, name)

        def exchange(self, *args: Any, **kwargs: Any) -> Any:
            if args[2] and args[3] and not entered.is_set():  # the first round that claims
                entered.set()
                release.wait(30)
            return real.exchange(*args, **kwargs)

    worker.writes = HeldRound()
    thread = threading.Thread(target=worker.run, kwargs={"install_signals": False}, daemon=True)
    thread.start()
    try:
        assert entered.wait(30), "no claiming round"
        coordinator.revoke(partition)
        with pytest.raises(AssertionError):  # a second is plenty for an immediate confirmation
            wait_for(lambda: coordinator.confirmed, 1.0, message="confirmation")
        release.set()
        wait_for(lambda: coordinator.confirmed, 30, message="confirmation after the round")
        # Confirmed once the round's claim was in the ledger; the job need not be done (it
        # keeps its claim across the move: fenced by job), and it runs here, once.
        [(parts, states)] = coordinator.confirmed
        assert parts == frozenset({partition}) and states[0] in ("running", "succeeded")
        wait_for(lambda: app.get_job(job_id).state == "succeeded", 30)  # type: ignore[union-attr]
        assert ran == [job_id]
    finally:
        release.set()
        worker.request_stop()
        thread.join(60)
    assert not thread.is_alive()
