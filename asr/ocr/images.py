"""Images for text recognition: reading any image file as the model sees it, and
generating the two data sets, CAPTCHAs and rendered text lines, from a seed.

Reading. An image is converted to grayscale, scaled to the model's height (and to
its fixed width, for CAPTCHAs; otherwise keeping the aspect ratio) and inverted, so
that ink is high and the background -- and the padding of a batch -- is near 0. A
file that is not an image, is empty, damaged or too large raises :class:`ImageError`
naming it; the size is checked from the header, before any pixel is decoded (a
decompression bomb costs nothing).

Generating. Every sample is a function of ``(kind, seed, split, index)`` alone: its
random generator is seeded with that string, so a set is the same whatever the
number of worker processes or the order they run in, and train, validation and test
draw from disjoint streams.

- CAPTCHAs: the ``captcha`` package's ``ImageCaptcha(width=160, height=60)`` with its
  default font, 4-6 characters from digits and capital letters (what MXNet's CTC
  example read). ``captcha`` draws from :mod:`secrets`, which cannot be seeded; while
  it draws, its module's ``secrets`` is pointed at the sample's seeded generator.
- Text lines: 1-4 random English words (WordNet's lemmas, single words of letters),
  in one of Debian's DejaVu fonts at a random size, slanted, blurred and with noise,
  dark ink on a light background of random shades.
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import math
import os
import random
import re
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont, UnidentifiedImageError

from asr.atomic import atomic_write_bytes, atomic_write_text

__all__ = [
    "CAPTCHA_ALPHABET",
    "KINDS",
    "LINE_ALPHABET",
    "ImageError",
    "Sample",
    "captcha_sample",
    "generate_set",
    "line_sample",
    "read_image",
    "read_manifest",
]

CAPTCHA_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
LINE_ALPHABET = " abcdefghijklmnopqrstuvwxyz"
KINDS = ("captcha", "lines")

# A bound on what is decoded: a text line or a CAPTCHA is a few hundred thousand
# pixels; 40 megapixels is a large photograph, and more is a mistake or an attack
# (PIL's own guard only warns below 179 megapixels).
MAX_PIXELS = 40_000_000
# A line wider than this once scaled to the model's height (128 characters and
# more at height 32) is not one line of text.
MAX_WIDTH = 4096

DEJAVU_DIR = Path("/usr/share/fonts/truetype/dejavu")
WORDNET_DIR = Path("/usr/share/wordnet")


class ImageError(ValueError):
    """An image file that cannot be read; ``str(e)`` names the file and the problem."""


@dataclass(frozen=True)
class Sample:
    """One manifest line: an image file and the text it shows."""

    image_filepath: Path
    text: str


def read_image(
    path: str | os.PathLike[str],
    height: int,
    width: int | None = None,
    max_pixels: int = MAX_PIXELS,
) -> np.ndarray:
    """An image file as the model reads it.

    Args:
        path: any format Pillow reads (PNG, JPEG, GIF, BMP, TIFF, WebP...).
        height: the height to scale to, in pixels.
        width: a fixed width to scale to, or None to keep the aspect ratio.
        max_pixels: refuse images with more pixels than this (checked in the
            header, before decoding).

    Returns:
        ``(height, W)`` uint8, ink high (255 - gray level).

    Raises:
        ImageError: missing, empty, not an image, damaged, or too large; the message
            names the file.
    """
    p = Path(path)
    try:
        size = p.stat().st_size
    except OSError as err:
        raise ImageError(f"{p}: cannot read ({err.strerror or err})") from None
    if not p.is_file():
        raise ImageError(f"{p}: not a file")
    if size == 0:
        raise ImageError(f"{p}: empty file")
    try:
        with Image.open(p) as im:
            w, h = im.size
            if w * h > max_pixels:
                raise ImageError(
                    f"{p}: {w} x {h} pixels, more than the limit of "
                    f"{max_pixels:,} (one text line or CAPTCHA is far smaller)"
                )
            if w < 1 or h < 1:
                raise ImageError(f"{p}: an image of {w} x {h} pixels")
            gray = im.convert("L")
    except UnidentifiedImageError:
        raise ImageError(f"{p}: not an image (no format Pillow reads)") from None
    except ImageError:
        raise
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
        raise ImageError(f"{p}: damaged image ({err})") from None
    out_w = width if width is not None else max(1, round(w * height / h))
    if out_w > MAX_WIDTH:
        raise ImageError(
            f"{p}: {w} x {h} pixels is {out_w} wide at height {height}, more than "
            f"{MAX_WIDTH}: not one line of text"
        )
    # BOX averages every source pixel when shrinking (no aliasing of thin strokes).
    resample = Image.Resampling.BOX if h >= height else Image.Resampling.BILINEAR
    gray = gray.resize((out_w, height), resample)
    return 255 - np.asarray(gray, dtype=np.uint8)


# -- CAPTCHAs ----------------------------------------------------------------------


class _SeededSecrets:
    """The three functions of :mod:`secrets` that ``captcha`` calls, drawn from a
    seeded generator."""

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng

    def randbelow(self, n: int) -> int:
        return self._rng.randrange(n)

    def randbits(self, k: int) -> int:
        return self._rng.getrandbits(k)

    def choice(self, seq: Sequence) -> object:
        return self._rng.choice(seq)


@contextlib.contextmanager
def _captcha_drawing_from(rng: random.Random) -> Iterator[None]:
    import captcha.image

    saved = captcha.image.secrets
    captcha.image.secrets = _SeededSecrets(rng)  # type: ignore[assignment]
    try:
        yield
    finally:
        captcha.image.secrets = saved


@functools.cache
def _captcha_generator():  # noqa: ANN202 (captcha.image.ImageCaptcha)
    from captcha.image import ImageCaptcha

    return ImageCaptcha(width=160, height=60)


def captcha_sample(
    seed: int, split: str, index: int, draw: bool = True
) -> tuple[Image.Image | None, str]:
    """CAPTCHA number ``index`` of ``split``: ``(160 x 60 RGB image, its text)``;
    with ``draw=False`` the text alone (the image is None): the text is drawn
    first, so it is known without drawing the image."""
    rng = random.Random(f"captcha:{seed}:{split}:{index}")
    text = "".join(rng.choice(CAPTCHA_ALPHABET) for _ in range(rng.randint(4, 6)))
    if not draw:
        return None, text
    with _captcha_drawing_from(rng):
        image = _captcha_generator().generate_image(text)
    return image, text


# -- text lines --------------------------------------------------------------------


@functools.cache
def lemmas(wordnet_dir: Path = WORDNET_DIR) -> tuple[str, ...]:
    """WordNet's single-word lemmas of 2-12 letters (index.{noun,verb,adj,adv}),
    sorted and unique: about 60,000 English words."""
    words: set[str] = set()
    word = re.compile(r"[a-z]{2,12}")
    for pos in ("noun", "verb", "adj", "adv"):
        path = Path(wordnet_dir) / f"index.{pos}"
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except OSError as err:
            raise ImageError(
                f"{path}: cannot read WordNet's lemma list ({err.strerror or err}); "
                "install Debian's wordnet-base"
            ) from None
        for line in text.splitlines():
            if line and not line.startswith(" "):  # the licence lines are indented
                lemma = line.split(" ", 1)[0]
                if word.fullmatch(lemma):
                    words.add(lemma)
    if not words:
        raise ImageError(f"{wordnet_dir}: no lemmas in index.noun/verb/adj/adv")
    return tuple(sorted(words))


@functools.cache
def line_fonts(font_dir: Path = DEJAVU_DIR) -> tuple[Path, ...]:
    """DejaVu's text faces (not the mathematical one, nor the hairline ExtraLight)."""
    fonts = tuple(
        p
        for p in sorted(Path(font_dir).glob("DejaVu*.ttf"))
        if "Math" not in p.name and "ExtraLight" not in p.name
    )
    if not fonts:
        raise ImageError(
            f"{font_dir}: no DejaVu fonts; install Debian's fonts-dejavu-core"
        )
    return fonts


@functools.cache
def _font(path: Path, size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(str(path), size)


def line_sample(
    seed: int,
    split: str,
    index: int,
    draw: bool = True,
    wordnet_dir: Path = WORDNET_DIR,
    font_dir: Path = DEJAVU_DIR,
) -> tuple[Image.Image | None, str]:
    """Text line number ``index`` of ``split``: ``(grayscale image, its text)``;
    with ``draw=False`` the text alone (the image is None).

    1-4 lemmas; font, size (18-40 px), slant (a shear of -0.35..0.35), blur
    (Gaussian, radius 0-1.2 px), noise (Gaussian, sigma 0-12 gray levels) and the
    shades of ink and paper are drawn per line.
    """
    rng = random.Random(f"lines:{seed}:{split}:{index}")
    words = lemmas(wordnet_dir)
    text = " ".join(rng.choice(words) for _ in range(rng.randint(1, 4)))
    if not draw:
        return None, text
    font = _font(rng.choice(line_fonts(font_dir)), rng.randint(18, 40))
    paper, ink = rng.randint(170, 255), rng.randint(0, 90)
    left, top, right, bottom = font.getbbox(text)
    pad_x, pad_y = rng.randint(2, 12), rng.randint(2, 8)
    w, h = right - left + 2 * pad_x, bottom - top + 2 * pad_y
    image = Image.new("L", (w, h), paper)
    ImageDraw.Draw(image).text((pad_x - left, pad_y - top), text, font=font, fill=ink)
    shear = rng.uniform(-0.35, 0.35)
    if abs(shear) > 0.02:
        # x_src = x + shear * (y - h/2): letters lean right for shear < 0; the canvas
        # widens so that no letter leaves it.
        extra = math.ceil(abs(shear) * h / 2)
        image = image.transform(
            (w + 2 * extra, h),
            Image.Transform.AFFINE,
            (1, shear, -extra - shear * h / 2, 0, 1, 0),
            Image.Resampling.BILINEAR,
            fillcolor=paper,
        )
    radius = rng.uniform(0, 1.2)
    if radius > 0.3:
        image = image.filter(ImageFilter.GaussianBlur(radius))
    sigma = rng.uniform(0, 12)
    noise = np.random.default_rng(rng.getrandbits(64)).normal(
        0, sigma, (image.height, image.width)
    )
    pixels = np.asarray(image, dtype=np.float32) + noise
    return Image.fromarray(pixels.clip(0, 255).astype(np.uint8), "L"), text


# -- data sets ----------------------------------------------------------------------


def _write_one(job: tuple[str, int, str, int, str]) -> tuple[str, str]:
    kind, seed, split, index, out_dir = job
    make = captcha_sample if kind == "captcha" else line_sample
    name = f"{index:06d}.png"
    path = Path(out_dir) / name
    # An image already there was written whole (atomically) by an interrupted run
    # with the same sample: only its text is needed.
    image, text = make(seed, split, index, draw=not path.is_file())
    if image is not None:
        buffer = io.BytesIO()
        image.save(buffer, format="png")
        # durable=False: thousands of files a rerun remakes; each whole or absent
        atomic_write_bytes(path, buffer.getbuffer(), durable=False)
    return name, text


def generate_set(
    out_dir: str | os.PathLike[str],
    kind: str,
    count: int,
    seed: int = 0,
    split: str = "train",
    jobs: int = 1,
) -> Path:
    """Write ``count`` images of ``kind`` (``captcha`` or ``lines``) and their
    manifest ``out_dir/manifest.jsonl`` (one ``{"image_filepath", "text"}`` a line,
    paths relative to it), written last: a set with a manifest is complete.

    Resumable: the images an interrupted run (with the same kind, seed and split)
    left are kept, and only the missing ones drawn; a larger ``count`` extends a
    set.

    Returns:
        The manifest's path.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}; choose one of: {', '.join(KINDS)}")
    if count < 1 or jobs < 1:
        raise ValueError(f"count and jobs must be >= 1, got {count} and {jobs}")
    out = Path(out_dir)
    if kind == "lines":  # fail before any worker starts
        lemmas()
        line_fonts()
    jobs_list = [(kind, seed, split, i, str(out)) for i in range(count)]
    if jobs == 1:
        rows = [_write_one(j) for j in jobs_list]
    else:
        with ProcessPoolExecutor(jobs) as pool:
            rows = list(pool.map(_write_one, jobs_list, chunksize=64))
    lines = [json.dumps({"image_filepath": n, "text": t}) + "\n" for n, t in rows]
    manifest = out / "manifest.jsonl"
    atomic_write_text(manifest, "".join(lines))
    return manifest


def read_manifest(path: str | os.PathLike[str]) -> list[Sample]:
    """An OCR manifest: JSON Lines of ``{"image_filepath": ..., "text": ...}``,
    relative paths resolved against the manifest's directory.

    Raises:
        ImageError: the file cannot be read, or a line is not such an object (the
            message names the file and the line).
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise ImageError(f"{p}: cannot read the manifest ({err})") from None
    samples = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise ImageError(f"{p}:{number}: not JSON ({err.msg})") from None
        if not (
            isinstance(row, dict)
            and isinstance(row.get("image_filepath"), str)
            and isinstance(row.get("text"), str)
        ):
            raise ImageError(
                f'{p}:{number}: expected {{"image_filepath": str, "text": str}}'
            )
        samples.append(Sample(p.parent / row["image_filepath"], row["text"]))
    if not samples:
        raise ImageError(f"{p}: no samples")
    return samples
