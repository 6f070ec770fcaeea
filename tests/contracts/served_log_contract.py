"""The behaviour every served log (``fyp.storage.served_logs.ServedLog``) must have.

A backend's test class subclasses :class:`ServedLogContract` and provides
:meth:`ServedLogContract.open_log`: the served log of region ``"us"`` on a store holding
users ``u1`` and ``u2``; called again with the same name it opens the same data anew,
as another serving process would (its own store connection, its own client).

Times are near now: a backend may expire pages by the wall clock (Redis does, after
``WINDOW_MS``).
"""

from __future__ import annotations

import threading
import time

import pytest

from contracts.store_contract import make_user
from fyp.errors import UnknownUser
from fyp.storage.served_logs import ServedLog

WINDOW_MS = 600_000  # the seen window the logs are opened with


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class ServedLogContract:
    """Contract tests; subclasses provide :meth:`open_log`."""

    def open_log(self, name: str = "main") -> ServedLog:
        """The served log of the test's database ``name``, its store seeded with u1, u2."""
        raise NotImplementedError

    @pytest.fixture
    def log(self) -> ServedLog:
        return self.open_log()

    @staticmethod
    def seed(log: ServedLog, *user_ids: str) -> None:
        for uid in user_ids:
            if log.store.get_user(uid) is None:
                log.store.insert_user(make_user(uid))

    def test_a_page_counts_one_up_and_is_read_back(self, log: ServedLog) -> None:
        self.seed(log, "u1", "u2")
        t = now_ms()
        before = log.user_version("u1")
        assert before is not None
        first = log.record_served("u1", ["v1", "v2", "v1"], t)  # a repeat within a page, once
        # up by one per page, but a backend may start a user's counter higher (Redis:
        # from its clock, so a server that lost its data never counts the same again)
        assert first > before[2]
        assert log.record_served("u1", ["v2", "v3"], t + 1) == first + 1
        assert log.user_version("u1") == (*before[:2], first + 1)
        assert log.served_since("u1", t - 1) == ["v1", "v2", "v3"]
        assert log.served_since("u1", t + 1) == ["v2", "v3"]
        assert log.served_since("u2", 0) == []
        assert log.user_version("u2") == log.store.user_version("u2")

    def test_the_marker_follows_the_store_for_everything_but_the_counter(
        self, log: ServedLog
    ) -> None:
        self.seed(log, "u1")
        log.record_served("u1", ["v1"], now_ms())
        marker = log.user_version("u1")
        user = log.store.get_user("u1")
        assert marker is not None and user is not None
        log.store.update_user(user.model_copy(update={"updated_at_ms": user.updated_at_ms + 1}))
        after = log.user_version("u1")
        assert after is not None and after[0] != marker[0] and after[2] == marker[2]
        assert log.user_version("nobody") is None

    def test_another_process_reads_a_page_at_once_and_numbers_on(self, log: ServedLog) -> None:
        self.seed(log, "u1")
        other = self.open_log()
        t = now_ms()
        mine = log.record_served("u1", ["a"], t)
        log.flush_served()  # a store that commits in groups: what a reader in another
        # process waits for (milliseconds); every other backend is read at once anyway
        assert other.served_since("u1", t) == ["a"]
        version = other.user_version("u1")
        assert version is not None and version[2] == mine
        assert other.record_served("u1", ["b"], t + 1) == mine + 1
        other.flush_served()
        assert log.served_since("u1", t) == ["a", "b"]
        assert log.record_served("u1", ["c"], t + 2) == mine + 2

    def test_two_processes_at_once_never_share_a_page_number(self, log: ServedLog) -> None:
        self.seed(log, "u1")
        other = self.open_log()
        log.record_served("u1", ["first"], now_ms())  # the counter is started
        start = log.user_version("u1")
        assert start is not None
        t, per_writer = now_ms(), 25
        numbers: list[int] = []
        lock = threading.Lock()

        def write(served: ServedLog, tag: str) -> None:
            for k in range(per_writer):
                n = served.record_served("u1", [f"{tag}{k}"], t + k)
                with lock:
                    numbers.append(n)

        threads = [
            threading.Thread(target=write, args=(s, tag)) for s, tag in ((log, "a"), (other, "b"))
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        log.flush_served()
        other.flush_served()
        assert sorted(numbers) == list(range(start[2] + 1, start[2] + 2 * per_writer + 1))
        assert len(log.served_since("u1", 0)) == 2 * per_writer + 1

    def test_forgetting_pages_never_takes_the_counter_back(self, log: ServedLog) -> None:
        self.seed(log, "u1", "u2")
        t = now_ms()
        log.record_served("u1", ["old", "again"], t - 10_000)
        log.record_served("u2", ["old"], t - 10_000)
        log.record_served("u1", ["again", "new"], t)
        log.flush_served()
        before = log.user_version("u2")
        assert before is not None
        assert log.forget_served_before(t - 5_000) == 2  # a page of each user
        assert sorted(log.served_since("u1", 0)) == ["again", "new"]
        assert log.served_since("u2", 0) == []
        assert log.forget_served_before(t - 5_000) == 0
        assert log.user_version("u2") == before
        assert log.record_served("u2", ["later"], t + 1) == before[2] + 1

    def test_a_user_who_is_not_there_gets_nothing_written(self, log: ServedLog) -> None:
        self.seed(log, "u1")
        with pytest.raises(UnknownUser):
            log.record_served("ghost", ["v"], now_ms())
        assert log.served_since("ghost", 0) == []
        assert log.user_version("ghost") is None
        log.store.delete_user("u1")  # gone (an erasure's store part)
        with pytest.raises(UnknownUser):
            log.record_served("u1", ["v"], now_ms())
        assert log.user_version("u1") is None
