"""The one parser for text someone else wrote: a URL's values, an uploaded or linked file, a manifest.

Whatever the input, these raise nothing but ValueError (with a message naming what was wrong), so a caller
that catches ValueError can never be broken by a string: Python's ``json`` recurses once per nesting level
(a document 300,000 brackets deep raises RecursionError), and ``str.isdigit`` accepts '²' and '①', which
``int`` then refuses. Depth is therefore measured before anything is decoded, and only ASCII digits count.
"""

import csv
import hashlib
import io
import json
import re
from pathlib import Path

import numpy as np

MAX_DEPTH = 32  # deeper than any document this project writes (a tour is 4 levels, a manifest 4)
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)  # a JSON string literal (linear: no nested quantifier)
_OPEN, _CLOSE = (ord("["), ord("{")), (ord("]"), ord("}"))


def nesting_depth(text: str) -> int:
    """The deepest ``[``/``{`` nesting outside string literals: a linear scan, no recursion."""
    skeleton = np.frombuffer(_STRING.sub("", text).encode("utf-8", "replace"), dtype=np.uint8)
    steps = np.isin(skeleton, _OPEN).astype(np.int32) - np.isin(skeleton, _CLOSE).astype(np.int32)  # [n_bytes]
    return int(np.cumsum(steps).max(initial=0))


def json_value(text: str | bytes, what: str, max_chars: int, max_depth: int = MAX_DEPTH) -> object:
    """``text`` decoded as JSON, or ValueError naming ``what`` (length, encoding, depth or syntax)."""
    if len(text) > max_chars:
        raise ValueError(f"{what} is longer than {max_chars:,} characters")
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError:
            raise ValueError(f"{what} is not JSON (its bytes are not UTF-8 text)") from None
    if nesting_depth(text) > max_depth:
        raise ValueError(f"{what} nests deeper than {max_depth} levels")
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as err:  # JSONDecodeError is a ValueError; so is a 5,000-digit number
        raise ValueError(f"{what} is not valid JSON ({type(err).__name__})") from None


def index(text: object, upper: int) -> int | None:
    """A whole number 0 ≤ n ≤ upper written in ASCII digits, else None ('²', '①', '-1', '1e3', ' 1')."""
    if not isinstance(text, str) or not text or len(text) > len(str(upper)):
        return None
    if not (text.isascii() and text.isdigit()):
        return None
    value = int(text)
    return value if value <= upper else None


MAX_CSV_BYTES = 64 << 20  # 64 MB: Waterbirds' metadata is 1 MB


def csv_rows(path, what: str) -> tuple[list[dict], str]:
    """The rows of a CSV file (a dict per row, keyed by the header) and its sha256; ValueError names ``what`` and
    says what was wrong (missing, too large, not UTF-8, not CSV)."""
    path = Path(path)
    if path.exists() and not path.is_file():  # a FIFO or a device would block the read or never end
        raise ValueError(f"{what} {path} is not a regular file; pass a CSV file")
    try:
        size = path.stat().st_size
        if size > MAX_CSV_BYTES:
            raise ValueError(f"{what} {path} is {size:,} bytes; the limit is {MAX_CSV_BYTES:,}")
        data = path.read_bytes()
    except OSError as err:
        raise ValueError(f"cannot read {what} {path}: {err.strerror or err}") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ValueError(f"{what} {path} is not UTF-8 text") from None
    try:
        rows = list(csv.DictReader(io.StringIO(text)))
    except csv.Error as err:
        raise ValueError(f"{what} {path} is not a readable CSV ({err})") from None
    return rows, hashlib.sha256(data).hexdigest()
