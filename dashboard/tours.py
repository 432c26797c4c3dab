"""Tours for presenter mode: a tour is a titled list of steps, each a view of the dashboard with speaker notes.

A step is what a link already says (model, dataset, split, n, layer, head, pc, metric, mask) plus the slide
that shows it (``slide``), a title, notes, and at most one live control (``control``: "head" toggles the step's
head on and off, "pc" its PC). ``layer``/``head`` may be "auto": the head whose mean ablation costs the most
accuracy on that cache, so a shipped tour survives a retrained model. Tours come from assets/tours/*.json,
from an uploaded file or from a link (``tour_data``, compressed and bounded); all three are untrusted and go
through ``parse_tour``, whose views go through the same ``parse_view`` as any link. No streamlit here.
"""

import base64
import binascii
import json
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path

from dashboard.offer import Offer
from dashboard.view import ViewState, parse_view
from residual_core.data.untrusted import index, json_value

TOURS_DIR = Path(__file__).resolve().parent.parent / "assets" / "tours"
SLIDES = ("heads_map", "head", "words", "ablation", "search", "probe", "where", "alignment", "shortcut")
CONTROLS = ("head", "pc")
VIEW_KEYS = ("model", "dataset", "split", "n", "layer", "head", "pc", "metric", "mask", "also", "query", "bank")
# also: a second dataset (ablation slides); query: a search slide's concept, in words
MAX_STEPS, MAX_TEXT, MAX_DATA, MAX_JSON = 40, 2_000, 40_000, 400_000


@dataclass(frozen=True)
class Step:
    title: str
    slide: str
    view: dict = field(default_factory=dict)  # URL parameters (strings), "auto" allowed for layer and head
    notes: str = ""
    control: str | None = None
    draw: dict = field(default_factory=dict)  # probe slides: world factor values of the image to draw


@dataclass(frozen=True)
class Tour:
    title: str
    steps: tuple[Step, ...]

    def to_json(self) -> str:
        return json.dumps({"title": self.title, "steps": [asdict(s) for s in self.steps]}, indent=1)


def _text(value, what: str, limit: int = MAX_TEXT) -> str:
    if not isinstance(value, str) or len(value) > limit:
        raise ValueError(f"a tour's {what} must be text of at most {limit} characters")
    return value


def parse_tour(data, offer: Offer) -> tuple[Tour, tuple[str, ...]]:
    """A tour from untrusted JSON data, or ValueError naming the first problem; notices for refused view values."""
    if not isinstance(data, dict) or not isinstance(data.get("steps"), list):
        raise ValueError("a tour is a JSON object with a 'steps' list")
    if not 1 <= len(data["steps"]) <= MAX_STEPS:
        raise ValueError(f"a tour has 1 to {MAX_STEPS} steps")
    steps, notices, resized = [], [], {}
    for number, raw in enumerate(data["steps"], 1):
        if not isinstance(raw, dict):
            raise ValueError(f"step {number} is not a JSON object")
        slide = raw.get("slide")
        if slide not in SLIDES:
            raise ValueError(f"step {number}: slide must be one of {', '.join(SLIDES)}")
        control = raw.get("control")
        if control is not None and control not in CONTROLS:
            raise ValueError(f"step {number}: control must be one of {', '.join(CONTROLS)} or null")
        view = raw.get("view", {})
        if not isinstance(view, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in view.items()):
            raise ValueError(f"step {number}: view must map parameter names to text")
        view = {k: _text(v, "view value", 20_000) for k, v in view.items() if k in VIEW_KEYS}
        draw = raw.get("draw", {})
        if not isinstance(draw, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in draw.items()):
            raise ValueError(f"step {number}: draw must map world factors to values")
        if "also" in view and view["also"] not in offer.datasets:
            notices.append(f"step {number}: the second dataset {view['also'][:60]!r} is not offered here; left out")
            view.pop("also")
        view = _nearest_size(view, offer, resized, number)
        _, refused = parse_view({k: v for k, v in view.items() if v != "auto"}, offer)
        notices += [f"step {number}: {n}" for n in refused]
        steps.append(Step(_text(raw.get("title", f"Step {number}"), "title", 200), slide, view,
                          _text(raw.get("notes", ""), "notes"), control, dict(draw)))
    notices += [f"this server does not offer {asked} images; the steps that ask for it (steps "
                f"{', '.join(map(str, where))}) play with {used:,}" for (asked, used), where in resized.items()]
    return Tour(_text(data.get("title", "Tour"), "title", 200), tuple(steps)), tuple(notices)


def _nearest_size(view: dict, offer: Offer, resized: dict, number: int) -> dict:
    """A step asking for a size the server does not offer plays with the nearest it does (one notice for the
    tour, not one per step: a server offering other sizes would cover the screen)."""
    asked = index(view.get("n"), 100_000_000)
    if asked is None or view.get("model") not in offer.models or view.get("dataset") not in offer.datasets:
        return view
    sizes = offer.sizes_for(view["model"], view["dataset"])
    if asked in sizes:
        return view
    used = min(sizes, key=lambda n: (abs(n - asked), n))
    resized.setdefault((f"{asked:,}", used), []).append(number)
    return view | {"n": str(used)}


def step_view(step: Step, offer: Offer) -> tuple[ViewState, bool]:
    """The step's view as the offer allows it, and whether its head is "auto" (resolved on its cache)."""
    auto = step.view.get("layer") == "auto" or step.view.get("head") == "auto"
    view, _ = parse_view({k: v for k, v in step.view.items() if v != "auto"}, offer)
    return view, auto


def shipped_tours() -> dict[str, Path]:
    return {path.stem: path for path in sorted(TOURS_DIR.glob("*.json"))}


def load_shipped(name: str, offer: Offer) -> tuple[Tour, tuple[str, ...]]:
    path = shipped_tours().get(name)
    if path is None:
        raise ValueError(f"no shipped tour {name[:40]!r}; shipped: {', '.join(shipped_tours())}")
    return parse_tour(json_value(path.read_bytes(), f"the shipped tour {name}", MAX_JSON), offer)


def from_json_text(text: str | bytes, offer: Offer) -> tuple[Tour, tuple[str, ...]]:
    if len(text) > MAX_JSON:
        raise ValueError(f"a tour file is at most {MAX_JSON // 1000} kB")
    return parse_tour(json_value(text, "the tour file", MAX_JSON), offer)


def encode(tour: Tour) -> str:
    raw = json.dumps({"title": tour.title, "steps": [asdict(s) for s in tour.steps]}, separators=(",", ":"))
    return base64.urlsafe_b64encode(zlib.compress(raw.encode(), 9)).decode().rstrip("=")


def decode(text: str, offer: Offer) -> tuple[Tour, tuple[str, ...]]:
    """A tour from a link's ``tour_data``: bounded in length and inflated size, then parsed as any tour."""
    if len(text) > MAX_DATA:
        raise ValueError("the tour in the link is too long")
    try:
        inflater = zlib.decompressobj()
        data = inflater.decompress(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)), MAX_JSON)
        if inflater.unconsumed_tail:
            raise ValueError("the tour in the link inflates too far")
        return from_json_text(data, offer)
    except (binascii.Error, zlib.error) as err:
        raise ValueError(f"the tour in the link cannot be read ({type(err).__name__})") from err


def step_index(text: str | None, n_steps: int) -> int:
    """The 0-based step a link's ``step`` (1-based) opens: the first step for anything but 1..n_steps."""
    number = index(text, n_steps)
    return number - 1 if number else 0


def step_from_view(view: dict[str, str], slide: str, title: str) -> Step:
    """A step recorded from the view being explored ("add this view")."""
    control = {"ablation": "head"}.get(slide)
    return Step(title, slide, {k: v for k, v in view.items() if k in VIEW_KEYS}, "", control)
