"""A synthetic read source: plates at a fixed rate, for testing the data path without a camera."""
from __future__ import annotations

import io
import logging
import random
import threading
import time

from PIL import Image

from node.sink import ReadSink
from transport.payload import Candidate, ReadPayload

log = logging.getLogger(__name__)
ALPHABET = "ABCDEFGHJKLMNPRSTUVWXYZ0123456789"


def noise_jpeg(target_bytes: int, rng: random.Random) -> bytes:
    """A JPEG of roughly `target_bytes` (noise compresses badly, so size tracks pixel count)."""
    side = max(8, int((target_bytes / 1.6) ** 0.5))
    data = bytes(rng.getrandbits(8) for _ in range(side * side))
    out = io.BytesIO()
    Image.frombytes("L", (side, side), data).save(out, "JPEG", quality=75)
    return out.getvalue()


class SyntheticSource:
    """Produces reads until the outbox has committed `total` (0 = forever), at `rate_hz`."""

    def __init__(self, sink: ReadSink, *, node_id: str, site_id: str, camera_id: str, rate_hz: float,
                 total: int, crop_bytes: int, seed: int | None = None, plates: list[str] | None = None) -> None:
        self.sink = sink
        self.node_id, self.site_id, self.camera_id = node_id, site_id, camera_id
        self.period = 1.0 / rate_hz
        self.total = total
        self.plates = list(plates or [])
        self._count = 0
        self.rng = random.Random(seed)
        self.crop = noise_jpeg(crop_bytes, self.rng)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._beat = time.monotonic()  # see stalled_s
        self.done = threading.Event()
        self.ends = total > 0  # with a total it is done once the outbox has committed that many

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="synthetic-source", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the thread, waiting at most `timeout` s; alive() stays true if it has not ended."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                # Still inside a commit (a slow fsync): keep the reference so alive() stays true and
                # the runtime does not close the outbox under it.
                log.error("synthetic source: thread did not stop within %.1fs", timeout)
                return
            self._thread = None

    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def stalled_s(self) -> float:
        """Seconds the loop is overdue (a planned wait between reads does not count)."""
        return max(0.0, time.monotonic() - self._beat)

    def _run(self) -> None:
        next_t = time.monotonic()
        # The total counts across restarts (it is the outbox's own counter): read it once, then
        # count here rather than asking SQLite before every read.
        committed = self.sink.outbox.stats().committed
        while not self._stop.is_set():
            self._beat = time.monotonic()
            if self.total and committed >= self.total:
                self.done.set()
                log.info("synthetic source: %d reads committed in total; done", self.total)
                return
            if self.plates:
                plate = self.plates[self._count % len(self.plates)]
            else:
                plate = "".join(self.rng.choice(ALPHABET) for _ in range(7))
            self._count += 1
            self.sink.submit_read(ReadPayload(
                plate=plate, confidence=0.97, capture_time_ns=time.time_ns(), node_id=self.node_id,
                site_id=self.site_id, camera_id=self.camera_id, crop_jpeg=self.crop,
                char_confidences=tuple(0.97 for _ in plate), candidates=(Candidate(plate, 0.97),),
                trigger_source="synthetic", models={"source": "synthetic"},
            ))
            committed += 1
            next_t += self.period
            delay = next_t - time.monotonic()
            if delay > 0:
                self._beat = time.monotonic() + delay
                self._stop.wait(delay)
            else:
                next_t = time.monotonic()
