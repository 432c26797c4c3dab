"""The URL of a view, parsed against the server's offer: a link can only select what the server offers.

Every value goes through residual_core.data.untrusted (no parser here raises anything but a notice). No streamlit import
here, so the parsing is tested without a server.
"""

import base64
import binascii
import json
import zlib
from dataclasses import dataclass, field, fields

from dashboard.offer import DEFAULT_BANK, DEFAULT_LIMIT, MAX_MASK_JSON, Offer
from residual_core.read.ablation import AblationMask
from residual_core.data.datasets import SPLITS
from residual_core.data.untrusted import index, json_value

METRICS = ("evr1", "participation_ratio", "k90", "contribution_norm", "cosine_to_output", "accuracy_alone",
           "delta_acc_mean_ablated")
MAX_MASK_TEXT = 20_000  # characters of an encoded mask in a URL
MAX_INDEX = 10_000


@dataclass(frozen=True)
class ViewState:
    model: str
    dataset: str
    split: str = "test"
    limit: int = DEFAULT_LIMIT
    layer: int = 0
    head: int = 0
    pc: int = 0
    metric: str = "accuracy_alone"
    mask: AblationMask = field(default_factory=AblationMask)
    basis_from: str | None = None
    bank: str = DEFAULT_BANK  # the text bank embedded (an offered bank's name)


FIELDS = tuple(f.name for f in fields(ViewState))  # the one list of a view's fields
URL_NAMES = {"limit": "n", "basis_from": "basis"}  # a field's name in a link, where it differs


def to_query(view: ViewState) -> dict[str, str]:
    """The link of a view (the inverse of ``parse_view``): every field as text, the mask only when it ablates."""
    query = {URL_NAMES.get(name, name): str(getattr(view, name)) for name in FIELDS
             if name not in ("mask", "basis_from", "bank")}
    if view.bank != DEFAULT_BANK:  # links stay as they were for the default
        query["bank"] = view.bank
    if not view.mask.is_empty:
        query["mask"] = encode_mask(view.mask)
    if view.basis_from:
        query["basis"] = view.basis_from
    return query


def decode_mask(text: str) -> AblationMask:
    """A URL's mask, or ValueError: bounded in length and inflated size, every field type-checked."""
    if len(text) > MAX_MASK_TEXT:
        raise ValueError("too long")
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        inflater = zlib.decompressobj()
        data = inflater.decompress(raw, MAX_MASK_JSON)
    except (binascii.Error, zlib.error, ValueError) as err:  # non-ASCII text is a ValueError in b64decode
        raise ValueError(f"the mask is not compressed base64 ({type(err).__name__})") from None
    if inflater.unconsumed_tail:
        raise ValueError("inflates too far")
    return AblationMask.from_dict(json_value(data, "the mask", MAX_MASK_JSON))


def encode_mask(mask: AblationMask) -> str:
    raw = json.dumps(mask.to_dict(), separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(zlib.compress(raw, 9)).decode().rstrip("=")


def _index(query: dict, key: str, notices: list[str]) -> int:
    text = query.get(key)
    if text is None:
        return 0
    value = index(text, MAX_INDEX)
    if value is not None:
        return value
    notices.append(f"the link's {key} ({text[:40]!r}) is not a valid index; using 0")
    return 0


def _choice(query: dict, key: str, allowed, default, notices: list[str], what: str):
    text = query.get(key)
    if text is None or text in allowed:
        return default if text is None else text
    notices.append(f"the link asks for {what} {text[:80]!r}, which this server does not offer; showing {default}")
    return default


def parse_view(query: dict[str, str], offer: Offer) -> tuple[ViewState, tuple[str, ...]]:
    """The view a URL asks for, restricted to the offer, and a plain-text notice for every value refused."""
    notices: list[str] = []
    model = _choice(query, "model", offer.models, offer.default_model, notices, "the model")
    dataset = _choice(query, "dataset", offer.datasets, offer.default_dataset, notices, "the dataset")
    split = _choice(query, "split", SPLITS, "test", notices, "the split")
    sizes = [str(s) for s in offer.sizes_for(model, dataset)]
    default_n = DEFAULT_LIMIT if str(DEFAULT_LIMIT) in sizes else int(sizes[0])
    limit = int(_choice(query, "n", sizes, str(default_n), notices, "the number of images"))
    metric = _choice(query, "metric", METRICS, "accuracy_alone", notices, "the metric")
    mask = AblationMask()
    if "mask" in query:
        try:
            mask = decode_mask(query["mask"])
        except ValueError:
            notices.append("the ablation mask in the link could not be read; starting from no ablation")
    basis = query.get("basis") or None
    if basis is not None and basis not in {b.path for b in offer.built}:
        notices.append("the link's PCA basis is not a cache built on this server; using the split's own basis")
        basis = None
    bank = _choice(query, "bank", offer.bank_names, DEFAULT_BANK, notices, "the text bank")
    state = ViewState(model, dataset, split, limit, _index(query, "layer", notices), _index(query, "head", notices),
                      _index(query, "pc", notices), metric, mask, basis, bank)
    return state, tuple(notices)
