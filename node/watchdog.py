"""systemd notification (sd_notify) without a dependency: READY, WATCHDOG pings, STOPPING, STATUS."""
from __future__ import annotations

import os
import socket


class SystemdNotifier:
    """Talks to $NOTIFY_SOCKET when systemd gave one; does nothing otherwise."""

    # A datagram send blocks while the reader's queue is full (net.unix.max_dgram_qlen, often 10
    # messages): a busy systemd still gets the message within this, and a reader that stopped
    # reading cannot hold the main loop (watchdog pings) or the first step of a shutdown.
    send_timeout_s = 1.0

    def __init__(self) -> None:
        address = os.environ.get("NOTIFY_SOCKET")
        if address and address.startswith("@"):
            address = "\0" + address[1:]  # abstract namespace socket
        self._address = address
        usec = os.environ.get("WATCHDOG_USEC")
        self.watchdog_interval_s = int(usec) / 2e6 if usec and usec.isdigit() else None

    def notify(self, message: str) -> bool:
        """Send one notification; False if there is no systemd to tell."""
        if not self._address:
            return False
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.settimeout(self.send_timeout_s)
            try:
                sock.sendto(message.encode(), self._address)
            except OSError:  # socket.timeout included: not delivered, said by the return value
                return False
        return True

    def ready(self) -> None:
        self.notify("READY=1")

    def ping(self) -> None:
        self.notify("WATCHDOG=1")

    def stopping(self) -> None:
        self.notify("STOPPING=1")

    def status(self, text: str) -> None:
        self.notify(f"STATUS={text}")
