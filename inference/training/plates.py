"""Synthetic US-style licence plates: layouts, fonts, state backgrounds, slogans and damage.

Pure numpy / Pillow / OpenCV so tests can render plates without the training extra.
`PlateGenerator(seed).plate()` returns a `SynthPlate` with an RGB crop (like a tight crop of
a photographed plate), the main text (what the OCR must read) and the state code.
"""
from __future__ import annotations

import math
import zlib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
GENERATOR_VERSION = 4  # part of the cache keys: bump when the rendered data changes

STATES: dict[str, str] = {
    "ak": "ALASKA", "al": "ALABAMA", "ar": "ARKANSAS", "az": "ARIZONA", "ca": "California",
    "co": "COLORADO", "ct": "Connecticut", "dc": "Washington, D.C.", "de": "DELAWARE", "fl": "Florida",
    "ga": "GEORGIA", "hi": "HAWAII", "ia": "IOWA", "id": "IDAHO", "il": "Illinois", "in": "INDIANA",
    "ks": "KANSAS", "ky": "Kentucky", "la": "Louisiana", "ma": "Massachusetts", "md": "MARYLAND",
    "me": "MAINE", "mi": "MICHIGAN", "mn": "MINNESOTA", "mo": "MISSOURI", "ms": "MISSISSIPPI",
    "mt": "MONTANA", "nc": "NORTH CAROLINA", "nd": "NORTH DAKOTA", "ne": "NEBRASKA",
    "nh": "NEW HAMPSHIRE", "nj": "New Jersey", "nm": "NEW MEXICO", "nv": "NEVADA", "ny": "NEW YORK",
    "oh": "OHIO", "ok": "OKLAHOMA", "or": "OREGON", "pa": "PENNSYLVANIA", "ri": "Rhode Island",
    "sc": "SOUTH CAROLINA", "sd": "SOUTH DAKOTA", "tn": "Tennessee", "tx": "TEXAS", "ut": "UTAH",
    "va": "VIRGINIA", "vt": "VERMONT", "wa": "WASHINGTON", "wi": "WISCONSIN", "wv": "WEST VIRGINIA",
    "wy": "WYOMING",
}

SLOGANS = (
    "Land of Lincoln", "The Empire State", "Garden State", "Sunshine State", "Live Free or Die",
    "Great Lakes", "The Silver State", "America's Dairyland", "Green Mountain State", "First in Flight",
    "Grand Canyon State", "Famous Potatoes", "Ocean State", "Centennial", "Wild Wonderful",
    "Lone Star State", "Vacationland", "The Spirit of America", "Peach State", "In God We Trust",
    "Explore Minnesota", "Show Me State", "Keystone State", "Beautiful", "Discover",
    "visit our parks", "Land of Enchantment", "Celebrating Statehood", "Big Sky Country",
    "Sportsman's Paradise", "Heart of Dixie", "Aloha State", "Natural State", "Treasure State",
)

# Layouts: L = letter, N = digit, X = either; ' ', '-', '.' and '*' (an emblem) separate groups.
LAYOUTS = (
    "LLL NNNN", "LLL-NNNN", "NLLL NNN", "NLLL-NNN", "NNN LLL", "NNN-LLL", "LLL NNN", "LLL-NNN",
    "NNN NNN", "LL NNNNN", "NNNNNN", "NN*NNNN", "LLL*NNN", "NLL NNN", "LL-NNNN", "NNN*LLL",
    "NNN NNNN", "LLNNNN", "NNNLLL", "LLLNNNN", "NLLLNNN", "N LLL NNN", "LLL*NNNN", "NN LL NN",
    "NNNN LL", "LNNN LL", "XXXXXXX", "XXXXXX", "XXXXX", "XXXX", "XXX XXX", "XXXX XXX", "NNNNNNN",
)


@dataclass(frozen=True)
class SynthPlate:
    """One rendered plate: RGB uint8 image, the characters to read, the state code."""

    image: np.ndarray
    text: str
    region: str


# Narrow gothic faces like the ones most US plates use; the wider and serif faces are kept
# for older and specialty plates, at a lower share.
PLATE_LIKE_FONTS = ("LiberationSansNarrow-Bold.ttf", "NimbusSansNarrow-Bold.otf", "RobotoCondensed-Bold.ttf",
                    "RobotoCondensed-Regular.ttf")


def font_paths() -> list[Path]:
    """The fonts shipped in `inference/fonts` (only those, so every machine renders the same plates)."""
    here = Path(__file__).resolve().parent.parent / "fonts"
    found = sorted([*here.glob("*.ttf"), *here.glob("*.otf")])
    if not found:
        raise FileNotFoundError(f"no .ttf/.otf fonts found in {here}")
    return found


@lru_cache(maxsize=256)
def _font(path: str, size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(path, size)


def _text_image(text: str, font_path: str, size: int, fill: tuple[int, int, int]) -> Image.Image:
    """Text rendered tight on a transparent background."""
    font = _font(font_path, size)
    left, top, right, bottom = font.getbbox(text)
    img = Image.new("RGBA", (max(1, right - left + 2), max(1, bottom - top + 2)), (0, 0, 0, 0))
    ImageDraw.Draw(img).text((-left + 1, -top + 1), text, font=font, fill=fill + (255,))
    return img


class PlateGenerator:
    """Deterministic (per seed) generator of synthetic plate crops."""

    def __init__(self, seed: int = 0, width: int = 256, height: int = 128) -> None:
        self.rng = np.random.default_rng(seed)
        self.width = width
        self.height = height
        self.fonts = [str(p) for p in font_paths()]
        plate_like = np.array([Path(f).name in PLATE_LIKE_FONTS for f in self.fonts], np.float64)
        # 75 % of plates in the narrow plate-like faces when there are any
        if 0 < plate_like.sum() < len(self.fonts):
            weights = np.where(plate_like > 0, 0.75 / plate_like.sum(), 0.25 / (len(self.fonts) - plate_like.sum()))
        else:
            weights = np.full(len(self.fonts), 1.0 / len(self.fonts))
        self.main_font_weights = weights / weights.sum()
        self.regions = sorted(STATES)

    # -- text -----------------------------------------------------------------------------
    def random_text(self) -> str:
        """A plate string in one of the common layouts (separators kept, for rendering)."""
        rng = self.rng
        layout = LAYOUTS[rng.integers(len(LAYOUTS))]
        out = []
        for ch in layout:
            if ch == "L":
                out.append(chr(65 + rng.integers(26)))
            elif ch == "N":
                out.append(str(rng.integers(10)))
            elif ch == "X":
                out.append(ALPHABET[rng.integers(len(ALPHABET))])
            else:
                out.append(ch)
            # Most states never issue the letter O (and few issue Q): it is the same glyph as
            # zero, and labels write it as 0. Keep a few so both stay readable.
            if out[-1] in "OQ" and rng.random() < 0.85:
                out[-1] = "0"
        return "".join(out)

    # -- rendering ------------------------------------------------------------------------
    def _background(self, plain: bool = False) -> tuple[np.ndarray, tuple[int, int, int], bool]:
        rng = self.rng
        w, h = self.width, self.height
        if plain:
            return np.full((h, w, 3), 245, np.uint8), (15, 25, 90), False
        dark = rng.random() < 0.12
        if dark:
            base = rng.integers(0, 90, 3)
        else:
            base = rng.integers(170, 256, 3)
            if rng.random() < 0.3:  # tinted designs: pale yellow, blue, green, pink
                base[rng.integers(3)] = rng.integers(120, 220)
        img = np.empty((h, w, 3), np.float32)
        img[:] = base
        # vertical / horizontal gradient
        if rng.random() < 0.6:
            tint = rng.integers(-70, 70, 3).astype(np.float32)
            ramp = np.linspace(0, 1, h if rng.random() < 0.6 else w, dtype=np.float32)
            if ramp.size == h:
                img += ramp[:, None, None] * tint
            else:
                img += ramp[None, :, None] * tint
        # graphics: blobs, mountains, stripes (state art)
        for _ in range(rng.integers(0, 5)):
            colour = rng.integers(0, 256, 3).astype(np.float32)
            alpha = rng.uniform(0.15, 0.6)
            mask = np.zeros((h, w), np.uint8)
            kind = rng.integers(3)
            if kind == 0:
                cv2.ellipse(mask, (int(rng.integers(w)), int(rng.integers(h))), (int(rng.integers(10, w // 2)), int(rng.integers(5, h // 2))),
                            float(rng.uniform(0, 180)), 0, 360, 255, -1)
            elif kind == 1:
                pts = np.array([[0, h], [int(rng.integers(w)), int(rng.integers(h // 3, h))], [w, h]], np.int32)
                for _ in range(rng.integers(1, 4)):
                    pts = np.insert(pts, 1, [int(rng.integers(w)), int(rng.integers(h // 4, h))], axis=0)
                cv2.fillPoly(mask, [pts[np.argsort(pts[:, 0])] if False else pts], 255)
            else:
                y = int(rng.integers(h))
                cv2.rectangle(mask, (0, y), (w, y + int(rng.integers(3, h // 4))), 255, -1)
            m = (mask.astype(np.float32) / 255.0 * alpha)[..., None]
            img = img * (1 - m) + colour * m
        if dark:
            text_colour = tuple(int(v) for v in rng.integers(190, 256, 3))
        else:
            choices = [(0, 0, 0), (20, 30, 110), (120, 20, 20), (10, 80, 30), (60, 60, 60)]
            base_c = np.array(choices[rng.integers(len(choices))]) + rng.integers(0, 40, 3)
            text_colour = tuple(int(v) for v in np.clip(base_c, 0, 255))
        return np.clip(img, 0, 255).astype(np.uint8), text_colour, dark

    def _paste(self, canvas: Image.Image, glyphs: Image.Image, box: tuple[int, int, int, int]) -> None:
        """Scale `glyphs` to fill `box` (x, y, w, h) and alpha-blend it onto the canvas."""
        x, y, w, h = box
        glyphs = glyphs.resize((max(1, w), max(1, h)), Image.Resampling.BILINEAR)
        canvas.alpha_composite(glyphs, (x, y))

    def render(self, text: str, region: str, plain: bool = False) -> np.ndarray:
        """The flat, undamaged plate (RGB, width x height) showing `text`; `plain`: white, no art."""
        rng = self.rng
        w, h = self.width, self.height
        bg, colour, dark = self._background(plain)
        canvas = Image.fromarray(bg).convert("RGBA")
        draw = ImageDraw.Draw(canvas)
        font = self.fonts[int(rng.choice(len(self.fonts), p=self.main_font_weights))]
        # header: state name; footer: slogan (each sometimes missing)
        header_colour = tuple(int(v) for v in (rng.integers(0, 256, 3) if rng.random() < 0.5 else colour))
        if rng.random() < 0.9:
            name = STATES[region]
            if rng.random() < 0.5:
                name = name.upper()
            hdr = _text_image(name, self.fonts[rng.integers(len(self.fonts))], 40, header_colour)
            hh = int(h * rng.uniform(0.1, 0.2))
            hw = min(int(w * 0.9), max(10, int(hdr.width * hh / max(1, hdr.height) * rng.uniform(0.8, 1.3))))
            self._paste(canvas, hdr, ((w - hw) // 2 + int(rng.integers(-8, 9)), int(h * rng.uniform(0.02, 0.08)), hw, hh))
        if rng.random() < 0.75:
            slogan = SLOGANS[rng.integers(len(SLOGANS))]
            ftr = _text_image(slogan, self.fonts[rng.integers(len(self.fonts))], 32, header_colour)
            fh = int(h * rng.uniform(0.08, 0.15))
            fw = min(int(w * 0.85), max(10, int(ftr.width * fh / max(1, ftr.height))))
            self._paste(canvas, ftr, ((w - fw) // 2, int(h * rng.uniform(0.8, 0.88)), fw, fh))
        # main characters, drawn char by char so spacing and separators vary
        main_h = int(h * rng.uniform(0.42, 0.58))
        top = int(h * rng.uniform(0.2, 0.3))
        glyphs = []
        for ch in text:
            if ch in " -.*":
                glyphs.append(ch)
            else:
                glyphs.append(_text_image(ch, font, 64, colour))
        aspect = rng.uniform(0.45, 0.7)  # plate fonts are tall and narrow
        char_w = int(main_h * aspect)
        gap = int(char_w * rng.uniform(0.05, 0.2))
        sep_w = {" ": int(char_w * rng.uniform(0.3, 0.8)), "-": int(char_w * 0.6), ".": int(char_w * 0.5), "*": int(char_w * 0.9)}
        total = sum(sep_w[g] if isinstance(g, str) else char_w + gap for g in glyphs)
        max_w = int(w * rng.uniform(0.78, 0.92))
        stacked = rng.random() < 0.25
        if stacked:
            max_w -= int(char_w * 0.7)
        if total > max_w:
            scale = max_w / total
            char_w, gap = int(char_w * scale), int(gap * scale)
            sep_w = {k: int(v * scale) for k, v in sep_w.items()}
            total = sum(sep_w[g] if isinstance(g, str) else char_w + gap for g in glyphs)
        x = (w - total) // 2 + int(rng.integers(-6, 7))
        if stacked:
            # small stacked characters at the left (not part of the read plate, like most labels)
            sx = max(2, x - int(char_w * 0.2))
            x += int(char_w * 0.35)
            for i in range(2):
                small = _text_image(chr(65 + rng.integers(26)), font, 40, colour)
                sh = main_h // 2 - 2
                self._paste(canvas, small, (sx - int(char_w * 0.35), top + i * (sh + 3), max(4, int(char_w * 0.45)), sh))
        for g in glyphs:
            if isinstance(g, str):
                cx, cy = x + sep_w[g] // 2, top + main_h // 2
                if g == "-":
                    draw.rectangle((x + 2, cy - 2, x + sep_w[g] - 2, cy + 2), fill=colour)
                elif g == ".":
                    draw.ellipse((cx - 3, cy - 3, cx + 3, cy + 3), fill=colour)
                elif g == "*":
                    r = max(3, sep_w[g] // 2 - 1)
                    emblem = tuple(int(v) for v in rng.integers(0, 256, 3))
                    draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=emblem)
                x += sep_w[g]
            else:
                self._paste(canvas, g, (x, top, char_w, main_h))
                x += char_w + gap
        if rng.random() < 0.15 and x + int(char_w * 0.5) < w - 2:
            # small stacked characters or a tiny word at the right (also not read)
            sh = main_h // 2 - 2
            for i in range(2):
                small = _text_image(ALPHABET[rng.integers(len(ALPHABET))], font, 40, colour)
                self._paste(canvas, small, (x + 2, top + i * (sh + 3), max(4, min(w - x - 4, int(char_w * 0.45))), sh))
        # stickers and bolts
        for _ in range(rng.integers(0, 3)):
            sw, sh = int(w * rng.uniform(0.08, 0.14)), int(h * rng.uniform(0.1, 0.2))
            corner_x = int(rng.choice([rng.integers(2, 20), w - sw - int(rng.integers(2, 20))]))
            corner_y = int(rng.choice([rng.integers(2, 15), h - sh - int(rng.integers(2, 15))]))
            draw.rectangle((corner_x, corner_y, corner_x + sw, corner_y + sh), fill=tuple(int(v) for v in rng.integers(0, 256, 3)))
        if rng.random() < 0.5:
            for bx in (int(w * 0.2), int(w * 0.8)):
                for by in (int(h * 0.1), int(h * 0.9)) if rng.random() < 0.5 else (int(h * 0.1),):
                    draw.ellipse((bx - 4, by - 3, bx + 4, by + 3), fill=(90, 90, 90))
        if rng.random() < 0.15:  # dealer frame covering the bottom
            fh = int(h * rng.uniform(0.08, 0.16))
            draw.rectangle((0, h - fh, w, h), fill=tuple(int(v) for v in rng.integers(0, 60, 3)))
        return np.asarray(canvas.convert("RGB"))

    def degrade(self, flat: np.ndarray, tight: bool = True) -> np.ndarray:
        """Photograph the flat plate: perspective, crop, light, glare, blur, noise, IR, JPEG."""
        rng = self.rng
        h, w = flat.shape[:2]
        margin = rng.uniform(-0.03, 0.08) if tight else rng.uniform(0.1, 0.3)
        jitter = 0.04
        src = np.float32([[0, 0], [w, 0], [w, h], [0, h]])
        dst = src + rng.uniform(-jitter, jitter, (4, 2)).astype(np.float32) * np.float32([w, h])
        angle = math.radians(rng.normal(0, 3))
        centre = np.float32([w / 2, h / 2])
        rot = np.float32([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
        dst = (dst - centre) @ rot.T + centre
        out_w, out_h = int(w * (1 + 2 * margin)), int(h * (1 + 2 * margin))
        dst += np.float32([w * margin, h * margin])
        matrix = cv2.getPerspectiveTransform(src, dst)
        border = tuple(int(v) for v in rng.integers(0, 256, 3))
        img = cv2.warpPerspective(flat, matrix, (max(8, out_w), max(8, out_h)), borderMode=cv2.BORDER_CONSTANT, borderValue=border)
        img = img.astype(np.float32)
        # lighting: global gain/gamma, low light, shadow band
        gain = rng.uniform(0.55, 1.25)
        if rng.random() < 0.15:
            gain = rng.uniform(0.15, 0.45)  # low light
        img = img * gain + rng.uniform(-25, 25)
        if rng.random() < 0.2:
            x0 = int(rng.integers(out_w))
            img[:, x0:] *= rng.uniform(0.4, 0.8)
        if rng.random() < 0.2:  # glare
            gx, gy = rng.uniform(0, out_w), rng.uniform(0, out_h)
            yy, xx = np.mgrid[0:img.shape[0], 0:img.shape[1]].astype(np.float32)
            sigma = rng.uniform(0.1, 0.4) * out_w
            img += (np.exp(-((xx - gx) ** 2 + (yy - gy) ** 2) / (2 * sigma**2)) * rng.uniform(60, 200))[..., None]
        img = np.clip(img, 0, 255)
        if rng.random() < 0.15:  # IR camera: grey, washed-out background, dark characters
            grey = cv2.cvtColor(img.astype(np.uint8), cv2.COLOR_RGB2GRAY).astype(np.float32)
            grey = np.clip((grey - grey.mean()) * rng.uniform(1.0, 1.8) + rng.uniform(110, 170), 0, 255)
            img = np.repeat(grey[..., None], 3, axis=2)
        # scale to a realistic capture size, blur, noise, JPEG
        scale = rng.uniform(0.25, 1.0)
        small = cv2.resize(img.astype(np.uint8), (max(12, int(out_w * scale)), max(6, int(out_h * scale))), interpolation=cv2.INTER_AREA)
        if rng.random() < 0.4:
            k = float(rng.uniform(0.3, 1.3))
            small = cv2.GaussianBlur(small, (0, 0), k)
        if rng.random() < 0.15:  # motion blur
            size = int(rng.integers(3, 7))
            kernel = np.zeros((size, size), np.float32)
            kernel[size // 2, :] = 1.0 / size
            small = cv2.filter2D(small, -1, kernel)
        noisy = small.astype(np.float32) + rng.normal(0, rng.uniform(0, 10), small.shape)
        small = np.clip(noisy, 0, 255).astype(np.uint8)
        if rng.random() < 0.5:
            ok, enc = cv2.imencode(".jpg", small, [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(30, 95))])
            if ok:
                small = cv2.imdecode(enc, cv2.IMREAD_UNCHANGED)
        return small

    def plate(self, tight: bool = True) -> SynthPlate:
        """A random plate, photographed and cropped."""
        region = self.regions[self.rng.integers(len(self.regions))]
        text = self.random_text()
        flat = self.render(text, region)
        label = "".join(ch for ch in text if ch in ALPHABET)
        return SynthPlate(self.degrade(flat, tight=tight), label, region)

    def clean_plate(self, text: str, region: str = "ca") -> np.ndarray:
        """A legible, front-on, plain white plate showing `text` (for tests and demos).

        The same text always gives the same image (seeded from its CRC, not `hash`, which
        changes between processes).
        """
        saved = self.rng
        self.rng = np.random.default_rng(zlib.crc32(f"{text}:{region}".encode()))
        try:
            flat = self.render(text, region, plain=True)
        finally:
            self.rng = saved
        return flat
