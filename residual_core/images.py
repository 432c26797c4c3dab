"""Turn user-supplied image bytes into a safe RGB PIL image, or a clear error. Never pickles, never crashes."""

import io
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

MAX_PIXELS = 40_000_000  # refuse decompression bombs well before they exhaust memory
MAX_SIDE = 1024  # larger uploads are downscaled: the model sees 224 px or less anyway


class ImageInputError(ValueError):
    """The upload is not a usable image; the message says what was wrong and what to do."""


@dataclass(frozen=True)
class LoadedImage:
    image: Image.Image  # RGB
    notes: tuple[str, ...]  # what was done to it (first frame of an animation, rotated, downscaled, …)


def open_image_bytes(data: bytes, name: str = "upload") -> LoadedImage:
    if not data:
        raise ImageInputError(f"{name} is empty (0 bytes); choose a PNG, JPEG or WebP file")
    notes: list[str] = []
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            width, height = image.size
            if width * height > MAX_PIXELS:
                raise ImageInputError(f"{name} is {width}×{height} pixels, more than {MAX_PIXELS:,}; "
                                      "resize it below that and upload again")
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
        pixels = np.asarray(image, dtype=np.float64)
        low, high = float(pixels.min()), float(pixels.max())
        scaled = (pixels - low) / (high - low) * 255 if high > low else np.zeros_like(pixels)
        notes.append(f"{mode} image rescaled to 8 bits")
        return Image.fromarray(scaled.astype(np.uint8)).convert("RGB")
    if mode in ("RGBA", "LA") or (mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        notes.append("transparency flattened onto white")
        return Image.alpha_composite(background, rgba).convert("RGB")
    if mode == "CMYK":
        notes.append("CMYK converted to RGB")
    return image.convert("RGB")
