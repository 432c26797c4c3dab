"""Tours: the shipped one parses against the offer, hostile tour files and links are refused in one line, and
the presenter page steps through a tour with its buttons and keeps its place in the link."""

import json

import pytest

from dashboard import tours
from dashboard.offer import server_offer


@pytest.fixture()
def offer(tmp_path):
    return server_offer([], {"RESIDUAL_CACHE": str(tmp_path)})


def test_the_demo_tour_parses_cleanly_and_tells_the_story(offer):
    tour, notices = tours.load_shipped("demo", offer)
    assert notices == ()
    assert 6 <= len(tour.steps) <= 12  # a talk's worth
    slides = [s.slide for s in tour.steps]
    assert slides[0] == "heads_map" and "ablation" in slides and "probe" in slides and slides[-1] == "alignment"
    assert "words" in slides and "search" in slides and "where" in slides  # words, a concept, a map
    assert any(s.slide == "shortcut" and s.view["model"] == "demo-shortcut" for s in tour.steps)  # the repair
    assert any(s.control == "head" and s.view.get("also") for s in tour.steps)  # one toggle, two datasets
    assert all(s.notes for s in tour.steps)


def test_a_tour_survives_the_link_and_the_file(offer):
    tour, _ = tours.load_shipped("demo", offer)
    again, notices = tours.decode(tours.encode(tour), offer)
    assert again == tour and notices == ()
    assert tours.from_json_text(tour.to_json(), offer)[0] == tour


@pytest.mark.parametrize("data,match", [
    ([], "JSON object"),
    ({"steps": []}, "1 to"),
    ({"steps": [{"slide": "rm -rf"}]}, "slide must be"),
    ({"steps": [{"slide": "head", "control": "eval"}]}, "control must be"),
    ({"steps": [{"slide": "head", "view": {"layer": 3}}]}, "view must map"),
    ({"steps": [{"slide": "head", "title": "x" * 5000}]}, "at most"),
    ({"steps": [{"slide": "head"}] * 41}, "1 to 40"),
])
def test_malformed_tours_are_refused_naming_the_problem(offer, data, match):
    with pytest.raises(ValueError, match=match):
        tours.parse_tour(data, offer)


def test_a_hostile_view_in_a_tour_is_a_notice_not_an_action(offer):
    data = {"steps": [{"slide": "heads_map", "view": {"model": "ViT-B-32:/etc/shadow", "dataset": "folder:/root",
                                                       "also": "folder:/"}}]}
    tour, notices = tours.parse_tour(data, offer)
    assert len(notices) == 3 and "also" not in tour.steps[0].view
    view, _ = tours.step_view(tour.steps[0], offer)
    assert view.model == offer.default_model and view.dataset == offer.default_dataset


def test_links_that_inflate_or_are_garbage_are_refused(offer):
    import base64
    import zlib

    bomb = base64.urlsafe_b64encode(zlib.compress(b"{" + b" " * 10_000_000 + b"}", 9)).decode()
    for text in (bomb, "%%%not-base64", "A" * 50_000):
        with pytest.raises(ValueError):
            tours.decode(text, offer)
    with pytest.raises(ValueError, match="not JSON"):
        tours.from_json_text(b"\xff\xfe{", offer)


def test_the_presenter_steps_through_a_tour_and_toggles_a_head(cache_root, open_app, tiny_cache):
    from residual_core.read.ablation import AblationMask, evaluate
    from residual_core.read.cache import most_important_head

    steps = [{"title": "Map", "slide": "heads_map", "view": {"model": "tiny-random", "dataset": "mnist-offline",
                                                            "n": "300", "metric": "evr1"}},
             {"title": "Off", "slide": "ablation", "control": "head",
              "view": {"model": "tiny-random", "dataset": "mnist-offline", "n": "300", "layer": "auto", "head": "auto"}}]
    data = tours.encode(tours.Tour("Test tour", tuple(tours.Step(**s) for s in steps)))
    at = open_app(cache_root, {"tour_data": data})
    at.switch_page("dashboard/pages/8_present.py").run()
    assert not at.exception and "Map" in at.markdown[2].value
    at.button(key="next").click().run()
    assert not at.exception and at.query_params["step"] in ("2", ["2"])
    assert at.metric[0].value == f"{tiny_cache.baseline_accuracy():.1%}"
    at.button(key="toggle_1").click().run()
    off = evaluate(tiny_cache, AblationMask(heads=frozenset({most_important_head(tiny_cache)})))
    assert not at.exception and at.metric[0].value == f"{off.accuracy:.1%}"
    at.button(key="prev").click().run()
    assert at.query_params["step"] in ("1", ["1"])


def test_a_recorded_ablation_plays_with_its_mask_and_a_fall_reads_as_a_fall(cache_root, open_app, tiny_cache):
    from streamlit.elements.metric import _is_negative_delta

    from dashboard.view import encode_mask
    from residual_core.read.ablation import AblationMask, evaluate

    mask = AblationMask(heads=frozenset({(0, 1)}), mlps=frozenset({1}), embed=True)
    steps = [{"title": "Recorded", "slide": "ablation", "control": "head",
              "view": {"model": "tiny-random", "dataset": "mnist-offline", "n": "300", "layer": "1", "head": "2",
                       "mask": encode_mask(mask)}}]
    at = open_app(cache_root, {"tour_data": tours.encode(tours.Tour("T", tuple(tours.Step(**s) for s in steps)))})
    at.switch_page("dashboard/pages/8_present.py").run()
    result = evaluate(tiny_cache, mask)
    assert not at.exception and at.metric[0].value == f"{result.accuracy:.1%}"  # not "all heads on"
    assert _is_negative_delta(at.metric[0].delta) == (result.delta < 0)
    assert any("L0H1" in c.value and "L1MLP" in c.value for c in at.caption), [c.value for c in at.caption]
    at.button(key="toggle_0").click().run()  # the step's head joins the recorded mask
    both = evaluate(tiny_cache, AblationMask(heads=frozenset({(0, 1), (1, 2)}), mlps=frozenset({1}), embed=True))
    assert at.metric[0].value == f"{both.accuracy:.1%}"


def test_recording_a_tour_adds_the_current_view(cache_root, open_app):
    at = open_app(cache_root, {"model": "tiny-random", "dataset": "mnist-offline", "split": "test", "n": "300",
                               "layer": "1", "head": "2"})
    at.button(key="tour_add").click().run()
    at.switch_page("dashboard/pages/2_head_explorer.py").run()
    at.button(key="tour_add").click().run()
    draft = at.session_state.tour_draft
    assert [s.slide for s in draft.steps] == ["heads_map", "head"]
    assert draft.steps[1].view["layer"] == "1" and draft.steps[1].view["head"] == "2"
    assert json.loads(draft.to_json())["steps"][1]["slide"] == "head"
    at.text_area(key="tour_notes_2").input("Its poles differ in shape.").run()
    at.text_input(key="tour_title_2").input("The shape head").run()
    assert not at.exception, at.exception
    last = at.session_state.tour_draft.steps[-1]
    assert (last.title, last.notes) == ("The shape head", "Its poles differ in shape.")
    assert at.session_state.tour_draft.steps[0].notes == ""  # only the last step was written to


@pytest.mark.parametrize("query,warning", [({"tour_data": "%%%garbage"}, "cannot be read"),
                                           ({"tour": "../../etc/passwd"}, "no shipped tour")])
def test_a_hostile_tour_link_plays_the_demo_tour_with_a_notice(tmp_path, monkeypatch, query, warning):
    from streamlit.testing.v1 import AppTest

    from dashboard.state import _process_offer

    monkeypatch.setenv("RESIDUAL_CACHE", str(tmp_path))
    _process_offer.clear()
    at = AppTest.from_file(str(tours.TOURS_DIR.parent.parent / "app.py"), default_timeout=120)
    at.query_params.update(query)
    at.switch_page("dashboard/pages/8_present.py").run()  # the link opens the presenter directly
    assert not at.exception
    assert warning in at.warning[0].value.replace("\\", "") and "demo tour" in at.warning[0].value
    assert at.session_state.tour == tours.load_shipped("demo", _process_offer())[0]
    assert not list(tmp_path.iterdir())  # nothing was built


def test_before_the_talk_prepares_an_alignment_step_training_included(tmp_path, open_app):
    """The shipped tour's alignment step said "No alignment trained yet" after every cache was built."""
    step = {"slide": "alignment", "title": "Alignment", "view": {"model": "tiny-random", "dataset": "mnist-offline",
                                                                 "n": "10000"}}
    link = tours.encode(tours.Tour("t", (tours.Step(step["title"], "alignment", step["view"]),)))
    root = tmp_path / "caches"
    root.mkdir()
    at = open_app(root, {})
    at.switch_page("dashboard/pages/8_present.py")
    at.query_params.update({"tour_data": link})
    at = at.run()
    assert not at.exception, at.exception
    todo = [c.value for c in at.caption if "Not prepared yet" in c.value]
    # the sizes the splits hold, not the link's 10,000
    assert todo and "3,000/1,000/1,000 images" in todo[0].replace("\\", "") and "training fine" in todo[0], todo
    at.button(key="prepare_tour").click().run(timeout=600)
    assert not at.exception, at.exception
    assert any("Every step of this tour is ready" in c.value for c in at.caption), [c.value for c in at.caption]
    [panel] = [e for e in at.expander if e.label == "Before the talk"]
    assert panel.proto.expanded  # open after preparing, so its "ready" line is seen (it collapsed before)
    assert not [w.value for w in at.warning if "Not prepared" in w.value]
    assert any("train 3,000 · val 1,000 · test 1,000 images" in c.value for c in at.caption)
    assert len(at.get("plotly_chart")) == 1


@pytest.mark.parametrize("slide", ["words", "search", "where"])
def test_the_words_search_and_where_slides_draw(cache_root, open_app, slide):
    view = {"model": "tiny-random", "dataset": "mnist-offline", "split": "test", "n": "300"}
    if slide == "search":
        view["query"] = "the number seven"
    draw = {"shape": "star", "colour": "red"} if slide == "where" else {}
    link = tours.encode(tours.Tour("t", (tours.Step("A step", slide, view, draw=draw),)))
    at = open_app(cache_root, {})
    at.switch_page("dashboard/pages/8_present.py")
    at.query_params.update({"tour_data": link})
    at = at.run()
    assert not at.exception, at.exception
    assert not [e.value for e in at.error], [e.value for e in at.error]
    if slide == "words":
        assert len([m for m in at.markdown if m.value.startswith("### ")]) >= 3  # texts, each with its share
        assert any("of its variance" in c.value for c in at.caption)
    elif slide == "search":
        titles = [json.loads(c.proto.spec)["layout"]["title"]["text"] for c in at.get("plotly_chart")]
        assert any("the number seven" in t for t in titles), titles
    else:  # the drawn image with the head's map over it, and where in words
        [overlay] = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]
        assert [t["type"] for t in overlay["data"]] == ["image", "heatmap"] and overlay["data"][1]["zmid"] == 0
        assert any("mostly from the" in m.value and (" pushes toward" in m.value or " pushes away" in m.value)
                   for m in at.markdown)


def test_the_shortcut_slide_switches_the_best_methods_units_off_and_on(tmp_path, open_app):
    from residual_core.build.pipeline import PrecomputeSpec, precompute

    root = tmp_path / "caches"
    for split in ("val", "test"):
        precompute(PrecomputeSpec(model="tiny-random", dataset="demo-world/shape", split=split, limit=60,
                                  cache_dir=str(root)))
    view = {"model": "tiny-random", "dataset": "demo-world/shape", "split": "test", "n": "60"}
    link = tours.encode(tours.Tour("t", (tours.Step("A shortcut", "shortcut", view),)))
    at = open_app(root, {})
    at.switch_page("dashboard/pages/8_present.py")
    at.query_params.update({"tour_data": link})
    at = at.run()
    assert not at.exception, at.exception
    assert not [e.value for e in at.error], [e.value for e in at.error]
    before = {m.label: m.value for m in at.metric}
    assert set(before) == {"Worst group", "Mean"}
    assert any("worst group" in c.value for c in at.caption)  # the verdict
    [toggle] = [b for b in at.button if b.label.startswith("Switch ")]
    assert "off" in toggle.label
    toggle.click().run()
    assert not at.exception, at.exception
    assert [b.label for b in at.button if b.label.startswith("Switch ")][0].endswith("back on   (T)")
    after = {m.label: m.value for m in at.metric}
    assert after != before  # the switch changed what the slide shows


def test_a_server_offering_other_sizes_plays_the_tour_with_its_nearest_and_says_so_once(tmp_path):
    offer = server_offer(["--sizes", "500,5000"], {"RESIDUAL_CACHE": str(tmp_path)})
    tour, notices = tours.load_shipped("demo", offer)
    assert len(notices) <= 2, notices  # one line per size asked for, not one per step
    assert any("2,000 images" in n and "play with" in n for n in notices), notices
    assert all(tours.step_view(s, offer)[0].limit in (500, 5000) for s in tour.steps)
