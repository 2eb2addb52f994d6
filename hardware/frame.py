"""One captured frame: both streams of the same sensor exposure, with their timing and metadata."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Frame:
    """A frame as every backend hands it on.

    `main` is the full-resolution RGB image (used for plate crops), `lores` a small RGB copy of
    the same exposure (used for detection). `timestamp_ns` is the sensor timestamp on the
    monotonic clock (the clock trigger events are stamped with); `wall_time_ns` is UTC.
    `metadata` holds what the sensor reported, e.g. ExposureTime (us), AnalogueGain, Lux.
    """

    main: np.ndarray
    lores: np.ndarray
    timestamp_ns: int
    wall_time_ns: int
    index: int
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("main", "lores"):
            image = getattr(self, name)
            if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3:
                raise ValueError(f"Frame.{name}: must be an HxWx3 array, got {getattr(image, 'shape', type(image))}")
            if image.dtype != np.uint8:
                raise ValueError(f"Frame.{name}: must be uint8, got {image.dtype}")

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) of the main stream."""
        return int(self.main.shape[1]), int(self.main.shape[0])

    @property
    def lores_size(self) -> tuple[int, int]:
        """(width, height) of the lores stream."""
        return int(self.lores.shape[1]), int(self.lores.shape[0])
