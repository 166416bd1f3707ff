"""systemd's readiness protocol (sd_notify) without libsystemd.

Under `Type=notify`, systemd passes a datagram socket in `$NOTIFY_SOCKET` and
reads newline-separated `KEY=value` assignments from it: `READY=1` ends the
start-up, `STATUS=` is shown by `systemctl status`, `WATCHDOG=1` proves the
main loop is alive, `STOPPING=1` and `RELOADING=1` announce state changes. The
protocol is one `sendto` per message, so it needs no library.

A `Notifier` never raises into the daemon: notification is a courtesy to the
service manager, and failing to send one must not stop spans from being
rebuilt. The first failure is logged; later ones are counted silently.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Mapping

import structlog

log = structlog.get_logger(__name__)


class Notifier:
    """Sends sd_notify messages to `$NOTIFY_SOCKET`; does nothing when it is unset.

    The address is a filesystem path, or an abstract socket written `@name`.
    Sends never block: if the receiver's queue is full the message is dropped
    (and counted as a failure), which systemd tolerates better than a stalled
    daemon that misses its watchdog.
    """

    def __init__(self, address: str | None) -> None:
        self.address = address or None
        self.failures = 0
        self._socket: socket.socket | None = None
        self._target = _socket_address(address) if address else None
        if address and self._target is None:
            self._fail(f"unsupported NOTIFY_SOCKET address {address!r}")

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] = os.environ) -> Notifier:
        """The notifier systemd asked for via `$NOTIFY_SOCKET`, or a silent one."""
        return cls(environ.get("NOTIFY_SOCKET"))

    @property
    def enabled(self) -> bool:
        """Whether messages go anywhere (a service manager is listening)."""
        return self._target is not None

    def ready(self, status: str | None = None) -> bool:
        """Start-up (or a reload) is complete."""
        return self.send("READY=1", *_status_field(status))

    def status(self, text: str) -> bool:
        """A one-line, human-readable state, shown by `systemctl status`."""
        return self.send(*_status_field(text))

    def watchdog(self) -> bool:
        """Keep-alive; send at least every `watchdog_interval()` seconds."""
        return self.send("WATCHDOG=1")

    def reloading(self, status: str | None = None) -> bool:
        """A reload has begun; follow it with `ready()` when it is done.

        `MONOTONIC_USEC` lets systemd (for `Type=notify-reload`) tell this
        reload apart from an earlier one.
        """
        now_usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self.send("RELOADING=1", f"MONOTONIC_USEC={now_usec}", *_status_field(status))

    def stopping(self, status: str | None = None) -> bool:
        """Shutdown has begun."""
        return self.send("STOPPING=1", *_status_field(status))

    def send(self, *fields: str) -> bool:
        """Send `fields` as one datagram. True if sent; False if disabled or failed."""
        if self._target is None or not fields:
            return False
        try:
            if self._socket is None:
                self._socket = socket.socket(
                    socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC
                )
                self._socket.setblocking(False)
            self._socket.sendto("\n".join(fields).encode(), self._target)
        except OSError as exc:
            self._fail(f"{type(exc).__name__}: {exc}")
            return False
        return True

    def close(self) -> None:
        """Release the socket; later sends open a new one."""
        if self._socket is not None:
            self._socket.close()
            self._socket = None

    def _fail(self, error: str) -> None:
        self.failures += 1
        if self.failures == 1:
            log.warning(
                "sd_notify failed; further failures are not logged",
                notify_socket=self.address,
                error=error,
            )


def watchdog_interval(
    environ: Mapping[str, str] = os.environ,
    pid: int | None = None,
) -> float | None:
    """Seconds between `WATCHDOG=1` messages, or None when no watchdog is asked for.

    systemd sets `WATCHDOG_USEC` (the period after which it kills the service)
    and `WATCHDOG_PID` (the process meant; absent means this one). Pinging at
    half the period, as sd_watchdog_enabled(3) advises, leaves room for a slow
    iteration of the main loop.
    """
    try:
        usec = int(environ.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    if usec <= 0:
        return None
    watchdog_pid = environ.get("WATCHDOG_PID")
    if watchdog_pid:
        this_pid = os.getpid() if pid is None else pid
        if watchdog_pid.strip() != str(this_pid):
            return None
    return usec / 2 / 1_000_000


def _socket_address(address: str) -> str | bytes | None:
    """The sendto() address for a `$NOTIFY_SOCKET` value; None if not an AF_UNIX one."""
    if address.startswith("@"):
        return b"\0" + address[1:].encode()  # Linux abstract namespace
    if address.startswith("/"):
        return address
    return None  # e.g. "vsock:..." (systemd in a VM), which this daemon does not need


def _status_field(text: str | None) -> tuple[str, ...]:
    # A newline would end the assignment and start a bogus one.
    return () if text is None else ("STATUS=" + " ".join(text.splitlines()),)
