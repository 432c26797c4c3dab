"""Untrusted text (a URL's values, a tour file or link, a file name): no parser raises anything but ValueError,
and nothing a user named is rendered as markup."""

import base64
import json
import random
import zlib

import pytest

from dashboard import tours
from dashboard.offer import Offer
from dashboard.view import decode_mask, encode_mask, parse_view
from residual_core.read.ablation import AblationMask
from residual_core.data.untrusted import index, json_value, nesting_depth

OFFER = Offer(models=("tiny-random",), datasets=("mnist-offline",), sizes=(300,), cache_dir="/nonexistent")
UNICODE_DIGITS = ["²", "①", "¹", "١", "٣", "𝟙", "Ⅻ", "½", "０"]  # isdigit() or isnumeric() say yes to some


def _packed(text: str) -> str:
    return base64.urlsafe_b64encode(zlib.compress(text.encode(), 9)).decode().rstrip("=")


@pytest.mark.parametrize("text", UNICODE_DIGITS + ["-1", " 1", "1 ", "1e3", "0x1", "", "9" * 5000, "10001"])
def test_an_index_is_ascii_digits_in_range_or_nothing(text):
    assert index(text, 10_000) is None


def test_an_index_in_ascii_digits_is_read():
    assert [index(t, 10_000) for t in ("0", "7", "10000", "007")] == [0, 7, 10_000, 7]


def test_json_depth_is_measured_before_decoding_and_strings_do_not_count():
    with pytest.raises(ValueError, match="nests deeper"):
        json_value("[" * 300_000 + "]" * 300_000, "the link", 10**6)
    with pytest.raises(ValueError, match="nests deeper"):
        json_value('{"a":' * 40 + "1" + "}" * 40, "the file", 10**6)
    assert json_value(json.dumps("[" * 5000), "a string", 10**6) == "[" * 5000
    assert json_value(json.dumps({"k": 'x"[[[\\'}), "escaped", 100) == {"k": 'x"[[[\\'}
    assert nesting_depth('[[1], {"a": [2]}]') == 3


@pytest.mark.parametrize("bad", [b"\xff\xfe", "[1,", "9" * 5000, "[" * 40, "\ud800"])
def test_bad_json_is_a_value_error_naming_the_input(bad):
    with pytest.raises(ValueError, match="the input"):
        json_value(bad, "the input", 10**6)


@pytest.mark.parametrize("key", ["layer", "head", "pc"])
@pytest.mark.parametrize("value", UNICODE_DIGITS)
def test_a_link_with_a_unicode_digit_falls_back_with_a_notice(key, value):
    view, notices = parse_view({key: value}, OFFER)
    assert getattr(view, key) == 0
    assert any(key in n for n in notices), notices


def test_a_deeply_nested_mask_is_refused_with_a_notice():
    deep = _packed("[" * 100_000 + "]" * 100_000)
    assert len(deep) < 20_000  # it fits in a link: the compression is what makes it dangerous
    with pytest.raises(ValueError):
        decode_mask(deep)
    view, notices = parse_view({"mask": deep}, OFFER)
    assert view.mask == AblationMask() and any("mask" in n for n in notices)
    good = AblationMask(heads=frozenset({(1, 2)}))
    assert decode_mask(encode_mask(good)) == good  # the parser still reads what the app writes


def test_no_link_value_breaks_the_parser():
    """Seeded fuzz over the characters that broke it before: never an exception, always a view."""
    rng = random.Random(0)
    alphabet = UNICODE_DIGITS + list("0123456789[]{}\"\\:,-=_%&#") + ["\x00", "\u202e", "é"]
    for _ in range(400):
        query = {key: "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 30)))
                 for key in rng.sample(["model", "dataset", "split", "n", "layer", "head", "pc", "metric", "mask",
                                        "basis"], 4)}
        view, _ = parse_view(query, OFFER)
        assert view.model == "tiny-random" and 0 <= view.layer <= 10_000


def test_a_tour_nested_too_deep_is_refused_as_a_link_and_as_a_file():
    with pytest.raises(ValueError, match="nests deeper"):
        tours.from_json_text("[" * 10_000 + "]" * 10_000, OFFER)
    deep_link = _packed('{"steps":' + "[" * 300_000 + "]" * 300_000 + "}")
    assert len(deep_link) <= tours.MAX_DATA
    with pytest.raises(ValueError):
        tours.decode(deep_link, OFFER)


def test_a_tour_step_whose_mask_is_nested_plays_with_a_notice():
    step = {"slide": "ablation", "view": {"mask": _packed("[" * 50_000 + "]" * 50_000)}}
    tour, notices = tours.parse_tour({"steps": [step]}, OFFER)
    assert any("mask" in n for n in notices)
    view, _ = tours.step_view(tour.steps[0], OFFER)
    assert view.mask == AblationMask()


@pytest.mark.parametrize("step, expected", [("3", 2), ("1", 0), ("0", 0), ("9", 0), ("¹", 0), ("③", 0), (None, 0)])
def test_a_links_step_opens_that_step_or_the_first(step, expected):
    assert tours.step_index(step, 5) == expected


def test_the_present_page_plays_the_demo_tour_for_a_hostile_link(cache_root, open_app):
    from streamlit.testing.v1 import AppTest

    deep = _packed('{"steps":' + "[" * 300_000 + "]" * 300_000 + "}")
    at = open_app(cache_root, {"model": "tiny-random", "dataset": "mnist-offline", "n": "300"})
    at.switch_page("dashboard/pages/8_present.py")
    at.query_params.update({"tour_data": deep, "step": "¹"})
    at = at.run()
    assert not at.exception, at.exception
    assert not [e.value for e in at.error if "view failed" in e.value]
    assert any("demo tour" in w.value for w in at.warning), [w.value for w in at.warning]
    assert at.session_state["present_step"] == 0
    assert isinstance(at, AppTest)


MARKUP_NAME = "[click](https:evil.example) **b**"


def test_a_file_name_with_markup_is_shown_as_typed_on_the_probe(tmp_path, open_app):
    """A folder dataset's file and class names reach every visitor: captions must not turn them into links."""
    from PIL import Image

    from residual_core.build.pipeline import PrecomputeSpec, precompute

    data = tmp_path / "data"
    for cls in ("a", "b"):
        (data / cls).mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (8, 8), (60 * i, 0, 0)).save(data / cls / f"{MARKUP_NAME} {i}.png")
    root = tmp_path / "caches"
    precompute(PrecomputeSpec(model="tiny-random", dataset=f"folder:{data}", split="all", limit=6,
                              cache_dir=str(root)))
    at = open_app(root, {"model": "tiny-random", "dataset": f"folder:{data}", "split": "all", "n": "6"})
    at.switch_page("dashboard/pages/3_probe.py").run()
    assert not at.exception, at.exception
    captions = [img.caption for element in at.get("image") for img in element.proto.imgs if img.caption]
    named = [c for c in captions if "evil" in c]
    assert named, captions
    assert all("\\[click\\]" in c and "\\*\\*b\\*\\*" in c for c in named), named
