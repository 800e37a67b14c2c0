"""The table the SMTP workers share: counts and the AUTH throttle seen by every process."""

from __future__ import annotations

import os

from mailyard.smtp.policy import AUTH_FAILURE_DELAY, AUTH_FAILURE_DELAY_MAX, AUTH_FAILURE_MEMORY
from mailyard.smtp.shared import CLIENT_SLOTS, MAX_PROBE, SharedState, client_key


def in_child(shared: SharedState, worker: int, action) -> None:  # type: ignore[no-untyped-def]
    """Run `action` in a forked process counting as `worker`; wait for it."""
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            shared.worker = worker
            action()
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def test_connections_counted_in_another_process_count_here() -> None:
    shared = SharedState()
    in_child(shared, 1, lambda: [shared.connection_opened("192.0.2.7") for _ in range(3)])
    assert shared.connection_opened("192.0.2.7") == (4, 4)
    assert shared.connection_opened("192.0.2.8") == (5, 1)
    shared.connection_closed("192.0.2.7")
    assert shared.connections() == 4 and shared.client_connections("192.0.2.7") == 3


def test_a_dead_workers_connections_stop_counting() -> None:
    shared = SharedState()
    in_child(shared, 3, lambda: [shared.connection_opened("192.0.2.7") for _ in range(5)])
    shared.connection_opened("192.0.2.7")
    assert shared.connections() == 6
    shared.forget_worker(3)
    assert shared.connections() == 1 and shared.client_connections("192.0.2.7") == 1


def test_auth_failures_in_one_worker_slow_down_the_next_attempt_in_another() -> None:
    now = [100.0]
    shared = SharedState(clock=lambda: now[0])
    in_child(shared, 1, lambda: shared.record_failure("198.51.100.9"))
    assert shared.failures("198.51.100.9") == 1
    assert shared.record_failure("198.51.100.9") == AUTH_FAILURE_DELAY * 2
    for _ in range(10):
        delay = shared.record_failure("198.51.100.9")
    assert delay == AUTH_FAILURE_DELAY_MAX
    assert shared.failures("198.51.100.1") == 0  # another address is not slowed down
    now[0] += AUTH_FAILURE_MEMORY + 1
    assert shared.failures("198.51.100.9") == 0
    assert shared.record_failure("198.51.100.9") == AUTH_FAILURE_DELAY
    shared.record_success("198.51.100.9")
    assert shared.failures("198.51.100.9") == 0


def test_ipv4_and_its_mapped_ipv6_form_are_one_client() -> None:
    assert client_key("192.0.2.1") == client_key("::ffff:192.0.2.1")
    assert client_key("192.0.2.1") != client_key("192.0.2.2")
    assert len(client_key("not an address")) == 16


def test_slots_are_reused_and_a_full_probe_run_degrades_safely() -> None:
    shared = SharedState()
    # many clients, one connection each, then all gone: their slots are free again
    for i in range(CLIENT_SLOTS // 2):
        ip = f"10.{i // 65536}.{(i // 256) % 256}.{i % 256}"
        shared.connection_opened(ip)
        shared.connection_closed(ip)
    assert shared.connections() == 0
    assert shared.connection_opened("203.0.113.5") == (1, 1)
    # more clients at once than a probe run can hold: counted for the service, not per client
    held = [f"172.16.{i // 256}.{i % 256}" for i in range(CLIENT_SLOTS + MAX_PROBE)]
    results = [shared.connection_opened(ip) for ip in held]
    assert results[-1][0] == len(held) + 1
    assert any(per_client == 0 for _, per_client in results)  # some could not be tracked
    assert shared.record_failure("172.31.0.1") in (AUTH_FAILURE_DELAY, AUTH_FAILURE_DELAY_MAX)


def test_rate_counters_count_per_window() -> None:
    now = [0.0]
    shared = SharedState(clock=lambda: now[0])
    assert shared.add_to_rate("out:example.net", 60) == 1
    in_child(shared, 1, lambda: shared.add_to_rate("out:example.net", 60, 4))
    assert shared.add_to_rate("out:example.net", 60) == 6
    assert shared.add_to_rate("out:other.test", 60) == 1
    now[0] += 60
    assert shared.add_to_rate("out:example.net", 60) == 1
