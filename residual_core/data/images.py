"""Turn user-supplied image bytes into a safe RGB PIL image, or a clear error. Never pickles, never crashes.

Budgets, checked from the header before any pixel is decoded:
  * per image: at most MAX_PIXELS decoded pixels. A larger JPEG is decoded at 1/2, 1/4 or 1/8 scale by
    libjpeg itself (PIL's ``draft``), so it costs what a small one does; other formats above it are refused.
  * per request: at most MAX_FILES images and MAX_TOTAL_PIXELS decoded pixels in all; what is past the budget
    is refused by name, not decoded.
  * per server: at most SERVER_DECODE_PIXELS pixels being decoded at once, across every session (a semaphore
    over pixels): four sessions each sending eight 16 MP images queue instead of each holding its own peak.
Every image is downscaled to MAX_SIDE at once, so a request holds at most MAX_FILES small images afterwards, and
16-bit and float images are brought to 8 bits in bands of rows from their own depth (no float64 copy).
"""

import contextlib
import ctypes
import ctypes.util
import io
import os
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path
from stat import S_ISREG

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

MAX_PIXELS = 16_000_000  # decoded pixels per image (a 4000×4000 photo); RGBA at this size is 64 MB
MAX_TOTAL_PIXELS = 48_000_000  # decoded pixels per request
MAX_FILES = 8  # images per request
MAX_SIDE = 1024  # larger uploads are downscaled: the model sees 224 px or less anyway
SERVER_DECODE_PIXELS = 32_000_000  # pixels in decoding at once in this process, every session together
DECODE_WAIT_S = 60.0  # how long an upload waits for its turn before it is refused as "server busy"
BAND_ROWS = 256  # rows converted to 8 bits at a time


class DecodeBudget:
    """A semaphore over pixels: ``hold(n)`` waits until n pixels fit within the server-wide budget."""

    def __init__(self, pixels: int) -> None:
        self.total, self.free = pixels, pixels
        self._turn = threading.Condition()

    @contextlib.contextmanager
    def hold(self, pixels: int, name: str, wait_s: float = DECODE_WAIT_S):
        pixels = min(max(pixels, 1), self.total)  # one image over the budget still gets the whole of it, alone
        with self._turn:
            if not self._turn.wait_for(lambda: self.free >= pixels, timeout=wait_s):
                raise ImageInputError(f"{name} was not opened: the server is decoding other uploads; try again in "
                                      "a minute")
            self.free -= pixels
        try:
            yield
        finally:
            with self._turn:
                self.free += pixels
                self._turn.notify_all()


DECODING = DecodeBudget(SERVER_DECODE_PIXELS)  # one per process: the Streamlit server's sessions share it


class ImageInputError(ValueError):
    """The upload is not a usable image; the message says what was wrong and what to do."""


@dataclass(frozen=True)
class LoadedImage:
    image: Image.Image  # RGB
    notes: tuple[str, ...]  # what was done to it (first frame of an animation, rotated, downscaled, …)


def open_image_bytes(data: bytes, name: str = "upload") -> LoadedImage:
    """One upload as a small RGB image, decoded within the server-wide budget (waiting for its turn)."""
    if not data:
        raise ImageInputError(f"{name} is empty (0 bytes); choose a PNG, JPEG or WebP file")
    with DECODING.hold(decoded_pixels(data), name):
        return _decode(data, name)


def _decode(data: bytes, name: str) -> LoadedImage:
    notes: list[str] = []
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            width, height = image.size
            if width * height > MAX_PIXELS and image.format == "JPEG":
                image.draft("RGB", (MAX_SIDE, MAX_SIDE))  # libjpeg decodes at 1/2, 1/4 or 1/8 scale
                notes.append(f"decoded at reduced scale from {width}×{height}")
            if image.size[0] * image.size[1] > MAX_PIXELS:
                raise ImageInputError(f"{name} is {width}×{height} pixels, more than the {MAX_PIXELS / 1e6:.0f} MP "
                                      "per image this server decodes; downscale it (or send a JPEG) and upload again")
            if getattr(image, "is_animated", False):
                notes.append(f"animated ({getattr(image, 'n_frames', '?')} frames): using the first frame")
                image.seek(0)
            image.load()
    except ImageInputError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise ImageInputError(f"{name} looks like a decompression bomb ({err}); upload a smaller image") from err
    except UnidentifiedImageError as err:
        raise ImageInputError(f"{name} is not an image Pillow can read; upload a PNG, JPEG or WebP file") from err
    except (OSError, SyntaxError, ValueError) as err:
        raise ImageInputError(f"{name} is damaged or truncated ({err}); re-export it and upload again") from err
    rotated = ImageOps.exif_transpose(image)
    if rotated is not None and rotated.size != image.size:
        notes.append("rotated upright from its EXIF orientation")
    image = rotated if rotated is not None else image
    image = _to_rgb(image, notes)
    if max(image.size) > MAX_SIDE:
        notes.append(f"downscaled from {image.size[0]}×{image.size[1]}")
        image.thumbnail((MAX_SIDE, MAX_SIDE), Image.LANCZOS)
    return LoadedImage(image, tuple(notes))


def _to_rgb(image: Image.Image, notes: list[str]) -> Image.Image:
    mode = image.mode
    if mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        notes.append(f"{mode} image rescaled to 8 bits")
        return Image.fromarray(_to_8_bits(np.asarray(image))).convert("RGB")
    if mode in ("RGBA", "LA") or (mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        notes.append("transparency flattened onto white")
        return Image.alpha_composite(background, rgba).convert("RGB")
    if mode == "CMYK":
        notes.append("CMYK converted to RGB")
    return image.convert("RGB")


def _to_8_bits(pixels: np.ndarray) -> np.ndarray:
    """[h, w] of any depth -> [h, w] uint8, its own range stretched to 0..255, a band of rows at a time in float32:
    the float64 copies this replaced held 8 bytes a pixel three times over (+0.5 GB for a 16 MP 16-bit TIFF)."""
    low, high = float(pixels.min()), float(pixels.max())
    out = np.zeros(pixels.shape, np.uint8)
    if not (high > low and np.isfinite(low) and np.isfinite(high)):
        return out
    scale = np.float32(255.0 / (high - low))
    for start in range(0, pixels.shape[0], BAND_ROWS):
        band = pixels[start:start + BAND_ROWS].astype(np.float32)  # [BAND_ROWS, w]
        np.clip(np.rint((band - np.float32(low)) * scale, out=band), 0, 255, out=band)
        out[start:start + BAND_ROWS] = band
    return out


def release_freed_memory() -> None:
    """Hand freed heap pages back to the OS (glibc's malloc_trim): without it, a server that decoded a burst of
    large uploads kept their peak resident after the sessions closed. A no-op where there is no glibc."""
    path = ctypes.util.find_library("c")
    libc = ctypes.CDLL(path) if path else None
    if libc is not None and hasattr(libc, "malloc_trim"):
        libc.malloc_trim(0)


@dataclass(frozen=True)
class UploadBatch:
    images: tuple[LoadedImage, ...]
    names: tuple[str, ...]
    errors: tuple[str, ...]  # one line per refused file


def decoded_pixels(data: bytes) -> int:
    """Pixels ``open_image_bytes`` would decode (after JPEG draft), from the header alone; 0 if unreadable."""
    try:
        image = Image.open(io.BytesIO(data))
        if image.size[0] * image.size[1] > MAX_PIXELS and image.format == "JPEG":
            image.draft("RGB", (MAX_SIDE, MAX_SIDE))
        return image.size[0] * image.size[1]
    except Exception:  # any header Pillow cannot parse: open_image_bytes names the problem
        return 0


def open_uploads(files: list[tuple[str, bytes]]) -> UploadBatch:
    """Decode one request's uploads within the per-request budgets; refused files are named, not decoded."""
    images, names, errors, spent = [], [], [], 0
    for index, (name, data) in enumerate(files):
        if index >= MAX_FILES:
            errors.append(f"{name} was not opened: at most {MAX_FILES} images per upload")
            continue
        pixels = decoded_pixels(data)
        if spent + pixels > MAX_TOTAL_PIXELS:
            errors.append(f"{name} was not opened: this upload already holds {spent / 1e6:.0f} MP of the "
                          f"{MAX_TOTAL_PIXELS / 1e6:.0f} MP per upload; send it separately")
            continue
        try:
            loaded = open_image_bytes(data, name)
        except ImageInputError as err:
            errors.append(str(err))
            continue
        spent += pixels
        images.append(loaded)
        names.append(name)
    release_freed_memory()
    return UploadBatch(tuple(images), tuple(names), tuple(errors))


def budget_text() -> str:
    return (f"Up to {MAX_FILES} images per upload, each at most {MAX_PIXELS / 1e6:.0f} MP decoded (larger JPEGs are "
            f"decoded at reduced scale), {MAX_TOTAL_PIXELS / 1e6:.0f} MP in all, and "
            f"{_MAX_UPLOAD_MB} MB per file; the server decodes {SERVER_DECODE_PIXELS / 1e6:.0f} MP at a time for "
            "all visitors together, so an upload may wait its turn.")


_MAX_UPLOAD_MB = 50  # .streamlit/config.toml server.maxUploadSize


def open_image_file(path: Path) -> LoadedImage:
    """An image file on disk, read like an upload: a regular file of at most the upload limit, else a one-line
    ImageInputError (a 4 GB or endless file is refused from its size, never read)."""
    try:
        with open(path, "rb") as handle:
            info = os.fstat(handle.fileno())
            if not S_ISREG(info.st_mode):
                raise ImageInputError(f"{path} is not a regular file; name an image file (PNG, JPEG, WebP)")
            if info.st_size > _MAX_UPLOAD_MB * 1_000_000:
                raise ImageInputError(f"{path} is {info.st_size / 1e6:,.0f} MB, more than the {_MAX_UPLOAD_MB} MB an "
                                      "upload may be; save a smaller copy")
            data = handle.read(_MAX_UPLOAD_MB * 1_000_000 + 1)
    except OSError as err:
        raise ImageInputError(f"{path} cannot be read ({err.strerror or err}); check the path") from None
    return open_image_bytes(data, path.name)
