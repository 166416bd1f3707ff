"""sd_notify over real AF_UNIX datagram sockets, as systemd would receive it."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from spanwatch.daemon.notify import Notifier, watchdog_interval


@pytest.fixture
def socket_dir() -> Iterator[Path]:
    # A short directory: AF_UNIX paths are limited to 107 bytes, pytest's tmp_path can be long.
    with tempfile.TemporaryDirectory(prefix="sw-notify-") as name:
        yield Path(name)


@pytest.fixture
def receiver(socket_dir: Path) -> Iterator[tuple[socket.socket, str]]:
    """A bound datagram socket standing in for systemd's notify socket."""
    path = str(socket_dir / "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(5)
    yield sock, path
    sock.close()


def receive(sock: socket.socket, count: int) -> list[str]:
    return [sock.recv(4096).decode() for _ in range(count)]


def test_messages_arrive_in_order(receiver: tuple[socket.socket, str]) -> None:
    sock, path = receiver
    notifier = Notifier(path)
    assert notifier.enabled
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert notifier.ready("watching 3 sessions")
    assert notifier.status("lag 0 events")
    assert notifier.watchdog()
    assert notifier.reloading()
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert notifier.ready()
    assert notifier.stopping("draining 2 sessions")
    notifier.close()

    messages = receive(sock, 6)
    assert messages[0] == "READY=1\nSTATUS=watching 3 sessions"
    assert messages[1] == "STATUS=lag 0 events"
    assert messages[2] == "WATCHDOG=1"
    reloading, monotonic = messages[3].split("\n")
    assert reloading == "RELOADING=1"
    key, value = monotonic.split("=")
    assert key == "MONOTONIC_USEC"
    assert before <= int(value) <= after
    assert messages[4] == "READY=1"
    assert messages[5] == "STOPPING=1\nSTATUS=draining 2 sessions"


def test_abstract_socket_address() -> None:
    name = f"spanwatch-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(b"\0" + name.encode())
        sock.settimeout(5)
        notifier = Notifier("@" + name)
        assert notifier.ready()
        assert notifier.watchdog()
        assert receive(sock, 2) == ["READY=1", "WATCHDOG=1"]
        notifier.close()


def test_status_stays_one_assignment(receiver: tuple[socket.socket, str]) -> None:
    sock, path = receiver
    Notifier(path).status("line one\nREADY=1")
    assert receive(sock, 1) == ["STATUS=line one READY=1"]


def test_unset_socket_is_a_silent_no_op() -> None:
    notifier = Notifier.from_environment({})
    assert not notifier.enabled
    with capture_logs() as logs:
        assert not notifier.ready()
        assert not notifier.watchdog()
        assert not notifier.stopping()
    assert logs == []
    assert notifier.failures == 0


def test_from_environment_reads_notify_socket(receiver: tuple[socket.socket, str]) -> None:
    sock, path = receiver
    notifier = Notifier.from_environment({"NOTIFY_SOCKET": path})
    assert notifier.ready()
    assert receive(sock, 1) == ["READY=1"]


def test_a_real_process_notifies_through_its_environment(
    receiver: tuple[socket.socket, str],
) -> None:
    sock, path = receiver
    code = (
        "from spanwatch.daemon.notify import Notifier\n"
        "n = Notifier.from_environment()\n"
        "n.ready('up'); n.stopping()\n"
    )
    env = {**os.environ, "NOTIFY_SOCKET": path}
    subprocess.run([sys.executable, "-c", code], env=env, check=True, timeout=60)
    assert receive(sock, 2) == ["READY=1\nSTATUS=up", "STOPPING=1"]


def test_failures_never_raise_and_are_logged_once(socket_dir: Path) -> None:
    notifier = Notifier(str(socket_dir / "nobody-listens"))
    with capture_logs() as logs:
        assert not notifier.ready()
        assert not notifier.watchdog()
        assert not notifier.stopping()
    assert notifier.failures == 3
    assert len(logs) == 1
    assert logs[0]["log_level"] == "warning"
    assert "FileNotFoundError" in logs[0]["error"]


def test_receiver_going_away_is_survived(receiver: tuple[socket.socket, str]) -> None:
    sock, path = receiver
    notifier = Notifier(path)
    assert notifier.ready()
    assert receive(sock, 1) == ["READY=1"]
    sock.close()
    os.unlink(path)
    with capture_logs():
        assert not notifier.watchdog()
    assert notifier.failures == 1


def test_unsupported_address_disables_and_logs() -> None:
    with capture_logs() as logs:
        notifier = Notifier("vsock:2:1234")
        assert not notifier.enabled
        assert not notifier.ready()
    assert len(logs) == 1
    assert "unsupported" in logs[0]["error"]


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({}, None),
        ({"WATCHDOG_USEC": ""}, None),
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "soon"}, None),
        ({"WATCHDOG_USEC": "20000000"}, 10.0),
        ({"WATCHDOG_USEC": "3000000", "WATCHDOG_PID": "4242"}, 1.5),
        ({"WATCHDOG_USEC": "3000000", "WATCHDOG_PID": "4243"}, None),
    ],
)
def test_watchdog_interval(environ: dict[str, str], expected: float | None) -> None:
    assert watchdog_interval(environ, pid=4242) == expected


def test_watchdog_interval_defaults_to_this_process() -> None:
    environ = {"WATCHDOG_USEC": "1000000", "WATCHDOG_PID": str(os.getpid())}
    assert watchdog_interval(environ) == 0.5
