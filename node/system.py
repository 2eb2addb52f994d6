"""Readings of the machine the node runs on: CPU temperature, throttling, disk, clock sync."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path


def cpu_temperature_c() -> float | None:
    """SoC temperature from the kernel's thermal zone, or None where there is none."""
    try:
        return int(Path("/sys/class/thermal/thermal_zone0/temp").read_text().strip()) / 1000.0
    except (OSError, ValueError):
        return None


def throttled() -> int | None:
    """The Pi firmware's throttling bits (vcgencmd get_throttled), or None off a Pi."""
    if shutil.which("vcgencmd") is None:
        return None
    try:
        out = subprocess.run(["vcgencmd", "get_throttled"], capture_output=True, text=True, timeout=2).stdout
        return int(out.strip().split("=")[1], 16)
    except (OSError, ValueError, IndexError, subprocess.TimeoutExpired):
        return None


def disk_free_bytes(path: Path) -> int:
    """Free bytes on the file system holding `path`."""
    return shutil.disk_usage(path).free


def clock_sync_state() -> str:
    """"synced" if systemd-timesyncd (or chrony via the same flag file) says so, else "unsynced"/"unknown"."""
    if Path("/run/systemd/timesync/synchronized").exists():
        return "synced"
    if Path("/run/systemd/timesync").exists():
        return "unsynced"
    return "unknown"
