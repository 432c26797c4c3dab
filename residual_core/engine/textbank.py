"""The project's text bank: short image descriptions composed from small vocabularies.

PC directions live in the joint space, so nearest texts explain them. The bank is written to
``assets/text_bank.txt`` by ``python -m residual_core textbank`` and read from there; a user may pass
any text file instead (one description per line).
"""

import hashlib
import itertools
from pathlib import Path

import numpy as np

BANK_PATH = Path(__file__).resolve().parents[2] / "assets" / "text_bank.txt"
PHOTO_BANK_PATH = BANK_PATH.parent / "photo_bank.txt"  # words about photos: the default off the demo world

OBJECTS = ("dog", "cat", "bird", "horse", "car", "truck", "airplane", "ship", "bicycle", "tree", "flower",
           "house", "bridge", "chair", "table", "bottle", "cup", "book", "phone", "clock", "person", "child",
           "face", "hand", "fish", "butterfly", "mountain", "road", "river", "building", "boat", "train")
COLOURS = ("red", "green", "blue", "yellow", "orange", "purple", "pink", "brown", "black", "white", "grey",
           "cyan")
TEXTURES = ("striped", "dotted", "checkered", "woven", "furry", "smooth", "rough", "wooden", "metallic",
            "marbled", "cracked", "knitted", "scaly", "wrinkled", "grainy", "glossy")
SHAPES = ("circle", "square", "triangle", "star", "heart", "hexagon", "diamond", "cross", "ring", "arrow",
          "spiral", "line")
SCENES = ("a beach", "a forest", "a city street", "a kitchen", "a desert", "a snowy field", "an office",
          "a farm", "a harbor", "a highway", "a park", "a living room", "a stadium", "a lake", "a market",
          "a parking lot")
STYLES = ("a photo", "a sketch", "a painting", "a cartoon", "a satellite image", "a close-up photo",
          "a blurry photo", "a black and white photo", "a low resolution image", "a drawing", "a 3D render",
          "a pixelated image")
COUNTS = ("one", "two", "three", "four", "many")
POSITIONS = ("on the left", "on the right", "at the top", "at the bottom", "in the centre", "in a corner")
DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
LETTERS = tuple("ABCDEFGHIJKLMNOPQRSTUVWXYZ")


def _plural(word: str) -> str:
    if word.endswith(("s", "sh", "ch")):
        return word + "es"
    if word == "child":
        return "children"
    if word == "person":
        return "people"
    if word.endswith("y") and word[-2] not in "aeiou":
        return word[:-1] + "ies"
    if word == "fish":
        return word
    return word + "s"


def compose_bank(seed: int = 0) -> list[str]:
    """Deterministic, de-duplicated descriptions covering every vocabulary (≥ 2,000 lines)."""
    rng = np.random.default_rng(seed)
    lines: list[str] = []
    lines += [f"{style} of a {obj}" for style, obj in itertools.product(STYLES, OBJECTS)]
    lines += [f"a {colour} {obj}" for colour, obj in itertools.product(COLOURS, OBJECTS)]
    lines += [f"a {texture} {colour} surface" for texture, colour in itertools.product(TEXTURES, COLOURS)]
    lines += [f"a {colour} {shape}" for colour, shape in itertools.product(COLOURS, SHAPES)]
    lines += [f"a {shape} {pos}" for shape, pos in itertools.product(SHAPES, POSITIONS)]
    lines += [f"{style} of {scene}" for style, scene in itertools.product(STYLES, SCENES)]
    lines += [f"{count} {_plural(obj) if count != 'one' else obj} in {scene}"
              for count, obj, scene in itertools.product(COUNTS[:3], OBJECTS[:12], SCENES[:8])]
    lines += [f"the number {digit}" for digit in DIGITS] + [f"a handwritten digit {d}" for d in range(10)]
    lines += [f"the letter {letter}" for letter in LETTERS] + [f"text with the letter {c}" for c in LETTERS]
    lines += [f"{count} {_plural(shape)} {pos}" for count, shape, pos in itertools.product(COUNTS[1:], SHAPES, POSITIONS)]
    lines += [f"a {texture} pattern" for texture in TEXTURES] + [f"a photo taken in {scene}" for scene in SCENES]
    seen: dict[str, None] = {}
    for line in lines:
        seen.setdefault(line, None)
    out = list(seen)
    rng.shuffle(out)  # a fixed shuffle so that truncated banks still cover every vocabulary
    return out


def write_bank(path: Path = BANK_PATH) -> Path:
    path.write_text("\n".join(compose_bank()) + "\n")
    return path


PLACES = ("a beach", "a forest", "a city street", "a kitchen", "a desert", "a snowy field", "an office", "a farm",
          "a harbor", "a highway", "a park", "a living room", "a stadium", "a lake", "a market", "a parking lot",
          "a mountain", "a river", "a bedroom", "a bathroom", "a restaurant", "a classroom", "a library", "a garden",
          "a field of grass", "a cave", "the sky", "underwater", "a swamp", "a bamboo forest", "an airport",
          "a train station", "a shop", "a church", "a bridge", "a playground", "a zoo", "a laboratory")
CONDITIONS = ("at night", "in bright sunlight", "in fog", "in the rain", "in snow", "at sunset", "indoors",
              "outdoors", "in low light", "with a blurred background", "from above", "from far away", "up close")
MATERIALS = ("wood", "metal", "glass", "plastic", "stone", "fabric", "paper", "leather", "water", "sand", "grass",
             "fur", "feathers", "concrete", "brick", "ice")
PHOTO_STYLES = ("a photo", "a sketch", "a painting", "a cartoon", "a close-up photo", "a blurry photo",
                "a black and white photo", "a low resolution image", "a drawing", "a 3D render", "a bright photo",
                "a dark photo", "a cropped photo", "a jpeg corrupted photo", "an embroidery", "a tattoo",
                "a plastic toy", "a sculpture", "an origami", "a video game rendering")


def _article(noun: str) -> str:
    return f"an {noun}" if noun[:1].lower() in "aeiou" else f"a {noun}"


def compose_photo_bank(categories, seed: int = 0) -> list[str]:
    """Descriptions of photographs (≥ 2,000 lines): every category named (``categories``, e.g. ImageNet's 1,000
    from torchvision's weight metadata), colours, materials, textures, places, conditions, styles and counts."""
    rng = np.random.default_rng(seed)
    names = list(dict.fromkeys(str(c).split(",")[0].strip() for c in categories if str(c).strip()))
    some = [names[i] for i in sorted(rng.choice(len(names), min(60, len(names)), replace=False))] if names else []
    lines = [f"a photo of {_article(n)}" for n in names]
    lines += [f"{style} of {_article(n)}" for style, n in itertools.product(PHOTO_STYLES, some[:24])]
    lines += [f"a {colour} {obj}" for colour, obj in itertools.product(COLOURS, OBJECTS)]
    lines += [f"a photo of {_article(n)} {cond}" for n, cond in itertools.product(some[24:48], CONDITIONS)]
    lines += [f"a photo of {place}" for place in PLACES] + [f"a photo taken {cond}" for cond in CONDITIONS]
    lines += [f"{_article(n)} in {place}" for n, place in itertools.product(some[48:60], PLACES[:16])]
    lines += [f"something made of {m}" for m in MATERIALS] + [f"a {t} texture" for t in TEXTURES]
    lines += [f"a {t} {colour} surface" for t, colour in itertools.product(TEXTURES[:8], COLOURS)]
    lines += [f"{count} {_plural(obj) if count != 'one' else obj}" for count, obj in itertools.product(COUNTS, OBJECTS)]
    lines += [f"{_article(obj)} {pos}" for obj, pos in itertools.product(OBJECTS[:12], POSITIONS)]
    lines += ["a photo with text on it", "a sign with words", "a photo with a watermark", "a photo of a screen",
              "a photo of a document", "a close-up of a face", "a group of people", "a crowd", "an empty room",
              "a photo with a frame"]
    out = list(dict.fromkeys(lines))
    rng.shuffle(out)  # a fixed shuffle so that truncated banks still cover every vocabulary
    return out


def write_photo_bank(path: Path = PHOTO_BANK_PATH) -> Path:
    """assets/photo_bank.txt from ImageNet's category names as torchvision ships them (offline, in its weights'
    metadata)."""
    from torchvision.models import get_weight

    categories = get_weight("ResNet50_Weights.IMAGENET1K_V1").meta["categories"]
    path.write_text("\n".join(compose_photo_bank(categories)) + "\n")
    return path


MAX_BANK_TEXTS = 100_000  # each is embedded once per model and compared with every PC: bounded time and memory
MAX_BANK_BYTES = 16 << 20
MAX_TEXT_CHARS = 1_000  # CLIP reads 77 tokens: a longer line is a file of something else


def load_bank(path: str | Path | None = None) -> list[str]:
    """Read a text bank (one description per line, blank lines and '#' comments ignored), UTF-8, bounded in size:
    a bad file is a ValueError naming it and what to do, never a codec error or an allocator failure."""
    path = Path(path) if path else BANK_PATH
    if not path.is_file():
        raise FileNotFoundError(f"text bank not found: {path}. Pass a text file with one description per line.")
    with open(path, "rb") as handle:
        raw = handle.read(MAX_BANK_BYTES + 1)
    if len(raw) > MAX_BANK_BYTES:
        raise ValueError(f"text bank {path} is larger than {MAX_BANK_BYTES >> 20} MB; pass at most "
                         f"{MAX_BANK_TEXTS:,} descriptions, one per line")
    try:
        lines = raw.decode("utf-8").splitlines()
    except UnicodeDecodeError as err:
        raise ValueError(f"text bank {path} is not UTF-8 text (byte {err.start}); pass a text file with one "
                         "description per line") from None
    texts = [t for t in (line.strip() for line in lines) if t and not t.startswith("#")]
    if not texts:
        raise ValueError(f"text bank {path} has no descriptions")
    if len(texts) > MAX_BANK_TEXTS:
        raise ValueError(f"text bank {path} has {len(texts):,} descriptions; at most {MAX_BANK_TEXTS:,} are embedded "
                         "(each once per model): pass a shorter list")
    longest = max(texts, key=len)
    if len(longest) > MAX_TEXT_CHARS or any("\x00" in t for t in texts):
        raise ValueError(f"text bank {path} holds a line of {len(longest):,} characters or a NUL byte; a description "
                         f"is at most {MAX_TEXT_CHARS:,} characters of text")
    return texts


def bank_digest(texts: list[str]) -> str:
    return hashlib.sha256("\n".join(texts).encode()).hexdigest()
