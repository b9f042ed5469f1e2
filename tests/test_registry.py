"""The worker registry's disk write at registration: outside the lock every pull and push takes, ids still recorded."""

from __future__ import annotations

import threading
import time
from concurrent import futures

from asyncrl.server.registry import WorkerRegistry


def test_a_registration_waiting_on_the_disk_holds_up_no_pull_or_push():
    """record_next_id (a write and an fsync) runs outside the registry's lock: seen() answers while it blocks,
    and the registration is answered only once its id is recorded."""
    writing, release, recorded = threading.Event(), threading.Event(), []

    def slow_record(next_id: int) -> bool:
        writing.set()
        assert release.wait(10)
        recorded.append(next_id)
        return True

    registry = WorkerRegistry(30.0, record_next_id=slow_record)
    release.set()
    first = registry.register("first", 1)
    writing.clear()
    release.clear()
    with futures.ThreadPoolExecutor(1) as pool:
        registering = pool.submit(registry.register, "second", 1)
        assert writing.wait(10)
        started = time.monotonic()
        assert registry.seen(first.worker_id, first.secret) is first  # a pull or push of another worker
        assert time.monotonic() - started < 1.0
        assert not registering.done()  # not answered before its id is on disk
        release.set()
        second = registering.result(timeout=10)
    assert second.worker_id == first.worker_id + 1
    assert recorded[-1] == second.worker_id + 1


def test_concurrent_registrations_are_all_recorded_with_distinct_ids():
    """Writes coalesce (one covers the registrations that arrived during the one before), never fall behind."""
    recorded: list[int] = []

    def record(next_id: int) -> bool:
        time.sleep(0.01)
        recorded.append(next_id)
        return True

    registry = WorkerRegistry(30.0, first_id=7, record_next_id=record)
    with futures.ThreadPoolExecutor(8) as pool:
        ids = sorted(r.worker_id for r in pool.map(lambda i: registry.register(f"w{i}", 1), range(40)))
    assert ids == list(range(7, 47))
    assert recorded == sorted(recorded) and recorded[-1] == 47


def test_registrations_that_arrive_during_a_write_are_covered_by_one_write():
    """While the first registration's write waits on the disk, 8 more take their ids and wait; one write then covers
    all 8."""
    started, release = threading.Event(), threading.Event()
    recorded: list[int] = []

    def record(next_id: int) -> bool:
        if not started.is_set():
            started.set()
            assert release.wait(30)
        recorded.append(next_id)
        return True

    registry = WorkerRegistry(30.0, first_id=1, record_next_id=record)
    with futures.ThreadPoolExecutor(9) as pool:
        first = pool.submit(registry.register, "w0", 1)
        assert started.wait(30)
        rest = [pool.submit(registry.register, f"w{i}", 1) for i in range(1, 9)]
        deadline = time.monotonic() + 30
        while registry.next_id < 10:  # all 8 have their ids and wait for the write in progress
            assert time.monotonic() < deadline
            time.sleep(0.01)
        release.set()
        ids = sorted(future.result().worker_id for future in [first, *rest])
    assert ids == list(range(1, 10))
    assert recorded == [2, 10]  # the first registration's write, then one for the 8 that waited


def test_a_failed_write_is_tried_again_at_the_next_registration():
    results = iter([False, True])
    recorded: list[int] = []

    def record(next_id: int) -> bool:
        recorded.append(next_id)
        return next(results)

    registry = WorkerRegistry(30.0, record_next_id=record)
    registry.register("a", 1)  # the write fails: the registration goes on
    registry.register("b", 1)
    assert recorded == [2, 3]
