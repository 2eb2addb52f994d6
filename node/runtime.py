"""The node runtime: owns every component, starts them in order, stops them in reverse.

    source (camera pipeline | clip | synthetic) → ReadSink → Outbox (fsync) → Uplink → broker

The source never waits on the network: it only commits to the local outbox; the uplink
drains the outbox on its own thread whenever the broker is reachable.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Protocol

from node import system
from node.config import AIM_SNAPSHOT_NAME, NodeConfig
from node.hotlist import HotList
from node.identity import Identity
from node.sink import ReadSink
from node.watchdog import SystemdNotifier
from transport.mqtt import BrokerSettings
from transport.outbox import Outbox
from transport.uplink import FEATURES, Uplink

log = logging.getLogger(__name__)

# A thread that has not come round its loop for this long is hung: longer than any one step
# it takes legitimately (a frame with tile passes on a Pi, an fsync on a slow SD card, a TLS
# connect), and short enough that systemd (WatchdogSec=30) restarts the node within a minute.
STALL_LIMIT_S = 20.0


class Source(Protocol):
    """What produces reads: the camera pipeline, or the synthetic source."""

    done: threading.Event
    ends: bool  # True when running out is normal (a clip, a synthetic total), not a failure

    def start(self) -> None: ...
    def stop(self, timeout: float = 5.0) -> None: ...
    def alive(self) -> bool: ...
    def stalled_s(self) -> float: ...
    def health(self) -> dict[str, Any]: ...


def broker_settings(config: NodeConfig) -> BrokerSettings:
    """The node's broker connection settings from its config."""
    b = config.broker
    return BrokerSettings(
        host=b.host, port=b.port, ca_file=config.path(b.ca, "tls/ca.pem"),
        cert_file=config.path(b.cert, "tls/node.pem"), key_file=config.path(b.key, "tls/node.key"),
        client_id=config.node.id, keepalive_s=b.keepalive_s, backoff_max_s=b.backoff_max_s,
    )


class Runtime:
    """Everything `alpr-node run` runs, with one stop event."""

    def __init__(self, config: NodeConfig, *, source: Source | None = None) -> None:
        self.config = config
        self.stop_event = threading.Event()
        config.node.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        _remove_aim_snapshot(config.node.data_dir / AIM_SNAPSHOT_NAME)
        self.identity = Identity.load(config)
        self.outbox = Outbox(config.node.data_dir / "outbox.db", quota_bytes=int(config.outbox.quota_mb * 1024 * 1024),
                             max_entries=config.outbox.max_entries, owner=True)
        self.hotlist = HotList(config.node.data_dir / "hotlist.msg", list(self.identity.hq_sign), config.node.id)
        self.sink = ReadSink(self.identity, self.outbox, hotlist_match=self.hotlist.match)
        self.uplink = Uplink(self.outbox, broker_settings(config), config.node.id, list(self.identity.hq_sign),
                             window=config.outbox.window, resend_after_s=config.outbox.resend_after_s,
                             on_control=self._control)
        self.source = source if source is not None else self._make_source()
        self.notifier = SystemdNotifier()
        self.started_ns = time.time_ns()
        self._started_mono = time.monotonic()  # uptime: NTP stepping the wall clock must not change it
        self._control_handlers: dict[str, Any] = {"hotlist": self.hotlist.update}

    def _make_source(self) -> Source:
        kind = self.config.source.kind
        if kind == "synthetic":
            from node.synthetic import SyntheticSource
            s = self.config.source.synthetic
            return SyntheticSource(self.sink, node_id=self.config.node.id, site_id=self.config.node.site,
                                   camera_id=self.config.node.camera, rate_hz=s.rate_hz, total=s.total,
                                   crop_bytes=s.crop_bytes, plates=s.plates)
        from node.pipeline_factory import make_pipeline  # camera and clip sources need the vision stack
        return make_pipeline(self.config, self.sink)

    def on_control(self, leaf: str, handler) -> None:
        """Register a handler for a down-link control message (hotlist, config)."""
        self._control_handlers[leaf] = handler

    def _control(self, leaf: str, payload: bytes) -> None:
        handler = self._control_handlers.get(leaf)
        if handler is None:
            # Said, not silently dropped: HQ staff checking why a push had no effect find it here.
            log.warning("control message on %r ignored: this node acts only on %s", leaf,
                        ", ".join(sorted(self._control_handlers)))
            return
        handler(payload)

    def start(self) -> None:
        """Start the uplink first (so a backlog drains), then the source."""
        self.uplink.start()
        self.source.start()
        self.notifier.ready()
        log.info("node %s started (site %s, source %s)", self.config.node.id, self.config.node.site,
                 self.config.source.kind)

    def stop(self) -> None:
        """Stop in reverse order within config.shutdown_timeout_s; the outbox keeps what is unsent."""
        self.notifier.stopping()
        deadline = time.monotonic() + self.config.shutdown_timeout_s
        self.source.stop(timeout=max(0.5, (deadline - time.monotonic()) * 0.6))
        uplink_stopped = self.uplink.stop(timeout=max(0.5, deadline - time.monotonic()))
        if self.source.alive() or not uplink_stopped:
            # Still flushing or still connecting: leave the outbox open (SQLite WAL is
            # crash-safe); the process exit ends it, and whatever was committed is sent next time.
            log.error("%s still running at the shutdown bound; exiting without closing the outbox",
                      "source" if self.source.alive() else "uplink")
        else:
            self.outbox.close()
        log.info("node %s stopped", self.config.node.id)

    def health(self) -> dict[str, Any]:
        """The heartbeat published on .../health and shown by `alpr-node status`."""
        stats = self.outbox.stats()
        report: dict[str, Any] = {
            "node": self.config.node.id, "t_ns": time.time_ns(),
            "uptime_s": round(time.monotonic() - self._started_mono, 1),
            "outbox": asdict(stats), "uplink": asdict(self.uplink.stats), "uplink_features": list(FEATURES),
            "link": asdict(self.uplink.link.stats),
            "reads": self.sink.reads, "alerts": self.sink.alerts, "events": self.sink.events,
            "images_dropped": self.sink.images_dropped,
            "hotlist": {"version": self.hotlist.version, "rejected": self.hotlist.rejected},
            "cpu_temp_c": system.cpu_temperature_c(), "throttled": system.throttled(),
            "disk_free_bytes": system.disk_free_bytes(self.config.node.data_dir),
            "clock": system.clock_sync_state(),
        }
        source_health = getattr(self.source, "health", None)
        if callable(source_health):
            report["pipeline"] = source_health()
        return report

    def run_until_stopped(self) -> None:
        """The main loop: health heartbeats and watchdog pings until the stop event is set."""
        interval = self.config.health.interval_s
        ping = self.notifier.watchdog_interval_s or 1.0
        next_health = time.monotonic()
        last_problem: str | None = None
        while not self.stop_event.wait(min(ping, interval, 1.0)):
            # Pet the watchdog only while the source and the uplink are running and making
            # progress: a dead or hung thread should get the service restarted by systemd.
            problem = liveness_problem(self.source, self.uplink.link)
            if problem is None:
                self.notifier.ping()
            elif last_problem is None or problem.split()[0] != last_problem.split()[0]:
                log.error("%s; withholding the watchdog ping", problem)  # once per thread, not per second
            last_problem = problem
            if time.monotonic() >= next_health:
                next_health = time.monotonic() + interval
                self.uplink.publish_health(self.health())


def _remove_aim_snapshot(path: Path) -> None:
    """Delete `alpr-node aim`'s snapshot left in the data directory (a plate in clear)."""
    try:
        path.unlink()
        log.info("removed %s left by alpr-node aim (the data directory keeps only ciphertext)", path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        log.warning("could not remove %s left by alpr-node aim: %s", path, exc)


def liveness_problem(source: Source, link: Any, limit_s: float = STALL_LIMIT_S) -> str | None:
    """Why the watchdog must not be pinged (a thread dead or hung), or None when all is well."""
    # A clip or a synthetic total ends and is done; a live camera's worker never ends on its
    # own, so its `done` (set on any exit, a crash included) is no excuse.
    if not (source.done.is_set() and source.ends):
        if not source.alive():
            return "source thread is not running"
        if source.stalled_s() > limit_s:
            return f"source thread has made no progress for {source.stalled_s():.0f} s"
    if not link.alive():
        return "uplink thread is not running"
    if link.stalled_s() > limit_s:
        return f"uplink thread has made no progress for {link.stalled_s():.0f} s"
    return None
