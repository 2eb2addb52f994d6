"""A systemd notification never blocks the node: the shutdown starts with one (STOPPING=1)."""
from __future__ import annotations

import socket
import threading
from pathlib import Path

import pytest

from node.watchdog import SystemdNotifier

pytestmark = pytest.mark.unit


def test_a_notify_socket_nobody_reads_does_not_block(tmp_path: Path, monkeypatch) -> None:
    """A datagram send waits while the reader's queue is full (net.unix.max_dgram_qlen, 10 by
    default): the notifier used to block there for good, holding the watchdog loop and the
    first step of Runtime.stop."""
    path = tmp_path / "notify.sock"
    reader = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    reader.bind(str(path))  # bound, never read
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    notifier = SystemdNotifier()
    notifier.send_timeout_s = 0.1
    results: list[bool] = []
    try:  # how many datagrams the reader's queue holds before a send waits
        queue = int(Path("/proc/sys/net/unix/max_dgram_qlen").read_text())
    except (OSError, ValueError):
        queue = 10

    def pings_then_stop() -> None:
        results.extend(notifier.notify("WATCHDOG=1") for _ in range(queue + 2))
        notifier.stopping()
        results.append(True)

    thread = threading.Thread(target=pings_then_stop, daemon=True)
    try:
        thread.start()
        thread.join(10)
        assert not thread.is_alive(), "notify blocked on a reader that does not read"
        assert results[0] is True and results[queue + 1] is False  # the queue filled up: said so
    finally:
        reader.close()
