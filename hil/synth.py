"""Synthetic clips for the bench: vehicles with US-style plates driving towards a fixed camera.

Each vehicle follows a straight-road trajectory (distance 20 m → 3 m at constant speed), so its
image grows and moves down the frame (scale and perspective change); the plate, rendered by
`inference.training.plates.PlateGenerator`, is warped onto the front bumper with a keystone that
depends on the lane. Lighting (day / night IR), exposure, sensor noise and motion blur from the
exposure time are applied per frame. Every vehicle drives the loop of its lane (pin 17 "loop1",
pin 27 "loop2"): falling edge when the front reaches the loop (12 m), rising when it has passed
(6 m). Ground truth: the plate, the time window in which it is legible (fully in frame, wide
enough, not hidden by a nearer vehicle) and its box in each of those frames.

    spec = ClipSpec(name="demo", duration_s=8, vehicles=(VehiclePass("ABC 1234", enter_s=1.0),))
    clip = write_clip(spec, Path("hil/clips/demo"))
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from hardware.clip import CameraSettings, Clip, ClipWriter
from inference.training.plates import ALPHABET, PlateGenerator

log = logging.getLogger(__name__)

# Road geometry, in main-stream pixels for a 1280x720 frame (scaled for other sizes).
_HORIZON = 150           # y where the road vanishes
_D_START, _D_END = 20.0, 3.0    # metres: trajectory from first sight to passing under the camera
_D_UNIT = 6.0            # distance at which the vehicle is drawn at scale 1
_D_LOOP_ON, _D_LOOP_OFF = 12.0, 6.0
_MIN_PLATE_PX = 60       # narrower than this (main stream) is not legible ground truth
LANE_PINS = {1: (17, "loop1"), 2: (27, "loop2")}
_LANE_OFFSET = {1: -90.0, 2: 380.0}


@dataclass(frozen=True)
class VehiclePass:
    """One vehicle: plate text as printed (separators allowed), when it appears, how long it takes."""

    plate: str
    region: str = "ca"
    enter_s: float = 0.0
    duration_s: float = 2.0
    lane: int = 1
    colour: tuple[int, int, int] = (40, 70, 160)

    @property
    def label(self) -> str:
        """The characters the OCR must read (separators dropped)."""
        return "".join(ch for ch in self.plate.upper() if ch in ALPHABET)

    def distance(self, t_s: float) -> float | None:
        """Distance from the camera at clip time t_s; None when not in view."""
        s = (t_s - self.enter_s) / self.duration_s
        if s < 0 or s > 1:
            return None
        return _D_START - (_D_START - _D_END) * s

    def time_at(self, distance_m: float) -> float:
        """Clip time at which the vehicle's front is `distance_m` from the camera."""
        return self.enter_s + (_D_START - distance_m) / (_D_START - _D_END) * self.duration_s


@dataclass(frozen=True)
class FalseTrigger:
    """A loop that fires with no vehicle in view (a bicycle, a fault, a metal trailer bar)."""

    at_s: float
    hold_s: float = 0.6
    lane: int = 1


@dataclass(frozen=True)
class Look:
    """Light and optics: night IR (monochrome, lit plate, headlight glare), gain, noise, exposure."""

    night_ir: bool = False
    gain: float = 1.0
    noise_sigma: float = 2.0
    exposure_us: int = 1000
    lux: float = 800.0


@dataclass(frozen=True)
class ClipSpec:
    """Everything a synthetic clip is made of."""

    name: str
    duration_s: float
    vehicles: tuple[VehiclePass, ...] = ()
    false_triggers: tuple[FalseTrigger, ...] = ()
    look: Look = field(default_factory=Look)
    fps: float = 8.0
    size: tuple[int, int] = (1280, 720)
    lores_size: tuple[int, int] = (640, 352)
    jpeg_quality: int = 85
    seed: int = 0
    description: str = ""


@dataclass(frozen=True)
class _Placed:
    """A vehicle drawn in one frame: body box and plate quad, main-stream pixels."""

    vehicle: VehiclePass
    scale: float
    body: tuple[int, int, int, int]
    plate_quad: np.ndarray


class _Renderer:
    """Draws frames for one ClipSpec (background computed once: the camera is fixed)."""

    def __init__(self, spec: ClipSpec) -> None:
        self.spec = spec
        self.w, self.h = spec.size
        self.u = self.w / 1280.0  # geometry is designed for 1280 wide
        self.rng = np.random.default_rng(spec.seed)
        gen = PlateGenerator(seed=spec.seed, width=256, height=128)
        self.plates = {v.plate: self._plate_image(gen, v) for v in spec.vehicles}
        self.background = self._background()

    # -- static parts ----------------------------------------------------------------------
    def _plate_image(self, gen: PlateGenerator, vehicle: VehiclePass) -> np.ndarray:
        flat = gen.render(vehicle.plate.upper(), vehicle.region)
        if self.spec.look.night_ir:
            # Retroreflective plates under IR: bright background, dark characters, no colour.
            grey = cv2.cvtColor(flat, cv2.COLOR_RGB2GRAY).astype(np.float32)
            grey = np.clip((grey - grey.mean()) * 1.5 + 175, 0, 255).astype(np.uint8)
            flat = np.repeat(grey[..., None], 3, axis=2)
        return flat

    def _background(self) -> np.ndarray:
        w, h, u = self.w, self.h, self.u
        night = self.spec.look.night_ir
        img = np.zeros((h, w, 3), np.uint8)
        horizon = int(_HORIZON * u)
        sky_top, sky_low = ((18, 18, 22), (30, 30, 34)) if night else ((120, 165, 215), (205, 220, 235))
        for y in range(horizon):
            a = y / max(1, horizon - 1)
            img[y] = [int(sky_top[i] * (1 - a) + sky_low[i] * a) for i in range(3)]
        img[horizon:] = (22, 26, 22) if night else (70, 120, 60)
        vp = (w // 2, horizon)
        road = np.array([[vp[0] - 12 * u, horizon], [vp[0] + 12 * u, horizon], [w * 1.25, h], [-w * 0.25, h]], np.int32)
        cv2.fillPoly(img, [road], (40, 40, 42) if night else (95, 95, 98))
        # buildings on the horizon, a pole on the right
        rng = np.random.default_rng(self.spec.seed + 7)
        x = 0
        while x < w:
            bw, bh = int(rng.integers(60, 180) * u), int(rng.integers(30, 110) * u)
            shade = int(rng.integers(25, 45)) if night else int(rng.integers(120, 190))
            if abs(x + bw / 2 - vp[0]) > 60 * u:
                cv2.rectangle(img, (x, horizon - bh), (x + bw, horizon), (shade, shade, shade + 5), -1)
            x += bw + int(rng.integers(5, 40) * u)
        cv2.rectangle(img, (int(w * 0.9), int(40 * u)), (int(w * 0.9 + 10 * u), h), (60, 60, 60) if not night else (30, 30, 30), -1)
        # lane markings: dashes on the centre line between lane 1 and lane 2
        colour = (120, 120, 110) if night else (235, 235, 225)
        for d in np.arange(4.0, 60.0, 3.0):
            k0, k1 = _D_UNIT / d, _D_UNIT / (d + 1.2)
            p0 = (self._x(135.0, k0), self._y(k0))
            p1 = (self._x(135.0, k1), self._y(k1))
            cv2.line(img, (int(p0[0]), int(p0[1])), (int(p1[0]), int(p1[1])), colour, max(1, int(6 * k0 * u)), cv2.LINE_AA)
        # A fixed-focus lens at plate distance: the far background is soft (and JPEGs stay small).
        return cv2.GaussianBlur(img, (0, 0), 1.5 * u)

    # -- geometry --------------------------------------------------------------------------
    def _y(self, k: float) -> float:
        return (_HORIZON + 640.0 * k) * self.u

    def _x(self, offset: float, k: float) -> float:
        return self.w / 2 + offset * k * self.u

    def place(self, vehicle: VehiclePass, t_s: float) -> _Placed | None:
        """Where `vehicle` is at t_s (None when not in view)."""
        d = vehicle.distance(t_s)
        if d is None:
            return None
        k = _D_UNIT / d
        width = 640.0 * k * self.u
        cx, bottom = self._x(_LANE_OFFSET[vehicle.lane], k), self._y(k)
        body = (int(cx - width / 2), int(bottom - 0.75 * width), int(cx + width / 2), int(bottom))
        pw, ph = 0.24 * width, 0.12 * width
        py = bottom - 0.2 * width
        # Keystone: the camera looks down, so the plate's top edge is a little narrower; a
        # vehicle off the optical axis is seen at an angle, so the plate is sheared sideways.
        shear = (cx - self.w / 2) / self.w * 0.18 * pw
        top = 0.035 * pw
        quad = np.float32([[cx - pw / 2 + top + shear, py - ph / 2], [cx + pw / 2 - top + shear, py - ph / 2],
                           [cx + pw / 2, py + ph / 2], [cx - pw / 2, py + ph / 2]])
        return _Placed(vehicle, k, body, quad)

    # -- drawing ---------------------------------------------------------------------------
    def frame(self, t_s: float) -> tuple[np.ndarray, list[_Placed]]:
        """The RGB frame at clip time t_s and the vehicles in it (far first)."""
        spec, look = self.spec, self.spec.look
        img = self.background.copy()
        placed = [p for p in (self.place(v, t_s) for v in spec.vehicles) if p is not None]
        placed.sort(key=lambda p: p.scale)
        for p in placed:
            self._draw_vehicle(img, p)
            self._motion_blur(img, p, t_s)
        out = img.astype(np.float32) * look.gain
        if look.noise_sigma > 0:
            # Sensor noise where it matters (on the vehicles); a noisy static background would
            # only make the shipped clips several times larger.
            for p in placed:
                x0, y0, x1, y1 = max(0, p.body[0]), max(0, p.body[1]), min(self.w, p.body[2]), min(self.h, p.body[3])
                if x1 > x0 and y1 > y0:
                    out[y0:y1, x0:x1] += self.rng.normal(0.0, look.noise_sigma, (y1 - y0, x1 - x0, 1)).astype(np.float32)
        out = np.clip(out, 0, 255).astype(np.uint8)
        if look.night_ir:
            grey = cv2.cvtColor(out, cv2.COLOR_RGB2GRAY)
            out = np.repeat(grey[..., None], 3, axis=2)
        return out, placed

    def _draw_vehicle(self, img: np.ndarray, p: _Placed) -> None:
        x0, y0, x1, y1 = p.body
        wd = x1 - x0
        night = self.spec.look.night_ir
        colour = tuple(int(c * (0.35 if night else 1.0)) for c in p.vehicle.colour)
        dark = (20, 20, 22)
        cv2.ellipse(img, ((x0 + x1) // 2, y1), (int(wd * 0.55), max(2, int(wd * 0.05))), 0, 0, 360, (15, 15, 15) if night else (50, 50, 52), -1)
        wheel_h = int(wd * 0.12)
        cv2.rectangle(img, (x0 + int(wd * 0.05), y1 - wheel_h), (x0 + int(wd * 0.2), y1), dark, -1)
        cv2.rectangle(img, (x1 - int(wd * 0.2), y1 - wheel_h), (x1 - int(wd * 0.05), y1), dark, -1)
        body_top = y1 - int(wd * 0.45)
        cv2.rectangle(img, (x0, body_top), (x1, y1 - int(wd * 0.06)), colour, -1)
        cabin = np.int32([[x0 + wd * 0.04, body_top], [x1 - wd * 0.04, body_top],
                          [x1 - wd * 0.16, y0], [x0 + wd * 0.16, y0]])
        cv2.fillPoly(img, [cabin], colour, cv2.LINE_AA)
        glass = np.int32([[x0 + wd * 0.1, body_top - wd * 0.02], [x1 - wd * 0.1, body_top - wd * 0.02],
                          [x1 - wd * 0.2, y0 + wd * 0.03], [x0 + wd * 0.2, y0 + wd * 0.03]])
        cv2.fillPoly(img, [glass], (25, 30, 38) if night else (60, 75, 90), cv2.LINE_AA)
        grille_y = y1 - int(wd * 0.36)
        cv2.rectangle(img, (x0 + int(wd * 0.3), grille_y), (x1 - int(wd * 0.3), grille_y + int(wd * 0.07)), dark, -1)
        lamp = (255, 255, 250) if night else (235, 235, 215)
        for lx in (x0 + int(wd * 0.06), x1 - int(wd * 0.22)):
            cv2.rectangle(img, (lx, grille_y), (lx + int(wd * 0.16), grille_y + int(wd * 0.06)), lamp, -1)
            if night:  # headlight glare under IR
                cv2.circle(img, (lx + int(wd * 0.08), grille_y + int(wd * 0.03)), max(2, int(wd * 0.09)), lamp, -1, cv2.LINE_AA)
        self._draw_plate(img, p)

    def _draw_plate(self, img: np.ndarray, p: _Placed) -> None:
        flat = self.plates[p.vehicle.plate]
        fh, fw = flat.shape[:2]
        quad = p.plate_quad
        x0, y0 = np.floor(quad.min(axis=0)).astype(int)
        x1, y1 = np.ceil(quad.max(axis=0)).astype(int)
        cx0, cy0, cx1, cy1 = max(0, x0), max(0, y0), min(self.w, x1), min(self.h, y1)
        if cx1 <= cx0 or cy1 <= cy0:
            return
        src = np.float32([[0, 0], [fw, 0], [fw, fh], [0, fh]])
        matrix = cv2.getPerspectiveTransform(src, quad - np.float32([cx0, cy0]))
        size = (cx1 - cx0, cy1 - cy0)
        warped = cv2.warpPerspective(flat, matrix, size, flags=cv2.INTER_AREA)
        mask = cv2.warpPerspective(np.full((fh, fw), 255, np.uint8), matrix, size, flags=cv2.INTER_LINEAR)
        roi = img[cy0:cy1, cx0:cx1]
        alpha = (mask.astype(np.float32) / 255.0)[..., None]
        roi[:] = (warped * alpha + roi * (1 - alpha)).astype(np.uint8)

    def _motion_blur(self, img: np.ndarray, p: _Placed, t_s: float) -> None:
        """Blur the vehicle along its image motion during the exposure (long exposures at night)."""
        exposure_s = self.spec.look.exposure_us / 1e6
        later = self.place(p.vehicle, t_s + exposure_s)
        if later is None:
            return
        length = abs(later.body[3] - p.body[3])
        if length < 2:
            return
        x0, y0, x1, y1 = (max(0, p.body[0]), max(0, p.body[1]), min(self.w, p.body[2]), min(self.h, p.body[3] + length))
        if x1 - x0 < 4 or y1 - y0 < 4:
            return
        kernel = np.zeros((length, 1), np.float32)
        kernel[:, 0] = 1.0 / length
        img[y0:y1, x0:x1] = cv2.filter2D(img[y0:y1, x0:x1], -1, kernel)


def _overlap(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> float:
    """Fraction of box a covered by box b."""
    ix = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    area = max(1, (a[2] - a[0]) * (a[3] - a[1]))
    return ix * iy / area


def _legible_box(placed: list[_Placed], index: int, size: tuple[int, int]) -> tuple[int, int, int, int] | None:
    """The plate box of placed[index] when it is legible in this frame, else None."""
    p = placed[index]
    x0, y0 = np.floor(p.plate_quad.min(axis=0)).astype(int)
    x1, y1 = np.ceil(p.plate_quad.max(axis=0)).astype(int)
    if x0 < 0 or y0 < 0 or x1 > size[0] or y1 > size[1] or x1 - x0 < _MIN_PLATE_PX * size[0] / 1280:
        return None
    box = (int(x0), int(y0), int(x1), int(y1))
    for nearer in placed[index + 1:]:
        if _overlap(box, nearer.body) > 0.2:
            return None
    return box


def write_clip(spec: ClipSpec, path: Path, *, overwrite: bool = False) -> Clip:
    """Render `spec` into a clip directory at `path` (frames, triggers, ground truth); returns it loaded."""
    renderer = _Renderer(spec)
    look = spec.look
    camera = CameraSettings(spec.size, spec.lores_size, spec.fps, exposure_us=look.exposure_us,
                            analogue_gain=round(max(1.0, look.gain * (8.0 if look.night_ir else 1.0)), 2),
                            model="synthetic")
    period_ns = round(1e9 / spec.fps)
    n_frames = math.floor(spec.duration_s * spec.fps) + 1
    windows: dict[str, list[int]] = {v.plate: [] for v in spec.vehicles}
    boxes: dict[str, list[tuple[int, list[int]]]] = {v.plate: [] for v in spec.vehicles}
    description = spec.description or spec.name
    with ClipWriter(path, camera, jpeg_quality=spec.jpeg_quality, description=description, overwrite=overwrite) as writer:
        for i in range(n_frames):
            t_ns = i * period_ns
            rgb, placed = renderer.frame(t_ns / 1e9)
            for j, p in enumerate(placed):
                box = _legible_box(placed, j, spec.size)
                if box is not None:
                    windows[p.vehicle.plate].append(t_ns)
                    boxes[p.vehicle.plate].append((i, list(box)))
            writer.add_frame(rgb, t_ns, metadata={"Lux": look.lux})
        end_ns = (n_frames - 1) * period_ns
        edges: list[tuple[int, int, str, str]] = []
        for v in spec.vehicles:
            pin, name = LANE_PINS[v.lane]
            on, off = int(v.time_at(_D_LOOP_ON) * 1e9), int(v.time_at(_D_LOOP_OFF) * 1e9)
            if on <= end_ns:
                edges.append((on, pin, "falling", name))
                edges.append((min(off, end_ns), pin, "rising", name))
        for f in spec.false_triggers:
            pin, name = LANE_PINS[f.lane]
            edges.append((int(f.at_s * 1e9), pin, "falling", name))
            edges.append((int((f.at_s + f.hold_s) * 1e9), pin, "rising", name))
        for t_ns, pin, edge, name in sorted(edges):
            writer.add_trigger(pin, edge, t_ns, name=name)
        for v in spec.vehicles:
            seen = windows[v.plate]
            if not seen:
                log.warning("%s: vehicle %s is never legible; left out of the ground truth", spec.name, v.label)
                continue
            writer.add_vehicle(v.label, seen[0], seen[-1], boxes=boxes[v.plate])
    return Clip.load(path)
