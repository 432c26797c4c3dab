"""AppTest of every page on the tiny cache: loads without exception, key widgets change what they should."""

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

from dashboard import navigation

ROOT = Path(__file__).resolve().parent.parent
PAGES = [spec.path for spec in navigation.PAGES if spec.title != "Present"]  # present: test_tours.py


@pytest.fixture()
def app(cache_root, open_app):
    return open_app(cache_root, {"model": "tiny-random", "dataset": "mnist-offline", "split": "test", "n": "300"})


def _no_errors(at: AppTest) -> None:
    assert not at.exception, at.exception
    assert not [e.value for e in at.error], [e.value for e in at.error]


def test_every_page_loads(app):
    _no_errors(app)
    assert app.title[0].value == "Heads map"
    for page in PAGES:
        app.switch_page(page).run()
        _no_errors(app)


def test_heads_map_metric_goes_to_the_url(app):
    app.selectbox(key="metric").set_value("evr1").run()
    _no_errors(app)
    value = app.query_params["metric"]
    assert (value if isinstance(value, str) else value[-1]) == "evr1"
    spec = json.loads(app.get("plotly_chart")[0].proto.spec)
    assert spec["data"][0]["colorbar"]["title"]["text"] == "share"  # the map drew the chosen metric


def test_head_explorer_follows_the_selected_head_and_pc(app):
    app.switch_page("dashboard/pages/2_head_explorer.py").run()
    app.selectbox(key="layer").set_value(1).run()
    app.selectbox(key="head").set_value(2).run()
    app.selectbox(key="pc").set_value(2).run()
    _no_errors(app)
    assert any("L1H2 PC3" in s.value for s in app.subheader)


def test_without_a_head_in_the_link_the_most_important_one_is_open(app, tiny_cache):
    from residual_core.read.cache import most_important_head

    app.switch_page("dashboard/pages/4_ablation_lab.py").run()
    expected = most_important_head(tiny_cache)
    assert (app.session_state.layer, app.session_state.head) == expected
    assert np.asarray(tiny_cache.head_ablated_acc).min() == tiny_cache.head_ablated_acc[tiny_cache.head_index(*expected)]


def test_ablation_lab_changes_the_accuracy(app, tiny_cache):
    app.switch_page("dashboard/pages/4_ablation_lab.py").run()
    before = app.metric[0].value
    assert before == f"{tiny_cache.baseline_accuracy():.2%}"
    heads = [(l, h) for l in range(tiny_cache.n_layers) for h in range(tiny_cache.n_heads)]
    app.multiselect(key="lab_heads").set_value(heads).run()
    _no_errors(app)
    from residual_core.read.ablation import AblationMask, evaluate

    result = evaluate(tiny_cache, AblationMask(heads=frozenset(heads)))
    assert app.metric[0].value == f"{result.accuracy:.2%}"
    assert app.metric[2].value == str(int((result.predictions != tiny_cache.baseline_predictions()).sum()))
    assert "mask" in app.query_params


def _reads_as_a_fall(delta: str) -> bool:
    """What st.metric makes of a delta text: a down arrow exactly when it starts with an ASCII '-'."""
    from streamlit.elements.metric import _is_negative_delta

    return _is_negative_delta(delta)


@pytest.mark.parametrize("mode", ["mean", "zero"])
def test_a_link_with_mlps_and_the_embedding_shows_the_engines_number_and_keeps_them(cache_root, open_app,
                                                                                     tiny_cache, mode):
    from dashboard.view import decode_mask, encode_mask
    from residual_core.read.ablation import AblationMask, evaluate

    mask = AblationMask(heads=frozenset({(1, 2)}), mlps=frozenset(range(tiny_cache.n_layers)), embed=True, mode=mode)
    at = open_app(cache_root, {"model": "tiny-random", "dataset": "mnist-offline", "split": "test", "n": "300",
                               "mask": encode_mask(mask)})
    at.switch_page("dashboard/pages/4_ablation_lab.py").run()
    _no_errors(at)
    result = evaluate(tiny_cache, mask)
    assert at.metric[0].value == f"{result.accuracy:.2%}"
    assert _reads_as_a_fall(at.metric[0].delta) == (result.delta < 0)
    assert at.session_state["mask"] == mask
    link = at.query_params["mask"]
    assert decode_mask(link if isinstance(link, str) else link[-1]) == mask  # the rewritten URL keeps every field
    at.checkbox(key="lab_embed").uncheck().run()
    at.multiselect(key="lab_mlps").set_value([0]).run()
    changed = AblationMask(heads=mask.heads, mlps=frozenset({0}), mode=mode)
    assert at.metric[0].value == f"{evaluate(tiny_cache, changed).accuracy:.2%}"


def test_a_fall_in_accuracy_reads_as_a_fall(app, tiny_cache):
    from residual_core.read.ablation import AblationMask, evaluate

    app.switch_page("dashboard/pages/4_ablation_lab.py").run()
    layer, head = app.session_state.layer, app.session_state.head  # the head that matters most: a real drop
    app.multiselect(key="lab_heads").set_value([(layer, head)]).run()
    result = evaluate(tiny_cache, AblationMask(heads=frozenset({(layer, head)})))
    assert result.delta < 0
    assert _reads_as_a_fall(app.metric[0].delta), app.metric[0].delta


def test_ablation_lab_draws_one_detail_view_on_request(app, tiny_cache):
    app.switch_page("dashboard/pages/4_ablation_lab.py").run()
    heads = [(l, h) for l in range(tiny_cache.n_layers) for h in range(tiny_cache.n_heads)]
    app.multiselect(key="lab_heads").set_value(heads).run()
    charts = len(app.get("plotly_chart"))
    assert not [m for m in app.markdown if "→" in m.value]  # nothing below the numbers until asked for
    app.button_group(key="lab_detail").set_value("flip gallery").run()
    _no_errors(app)
    flips = [m.value for m in app.markdown if "→" in m.value]
    changed = int(app.metric[2].value)
    assert flips and sum(int(v.split(": ")[1].split(" ")[0]) for v in flips) <= changed
    assert len(app.get("plotly_chart")) == charts
    app.button_group(key="lab_detail").set_value("confusion matrix change").run()
    _no_errors(app)
    assert len(app.get("plotly_chart")) == charts + 1 and not [m for m in app.markdown if "→" in m.value]


def test_probe_with_an_upload_and_with_a_broken_one(app):
    app.switch_page("dashboard/pages/3_probe.py").run()
    _no_errors(app)
    buffer = io.BytesIO()
    Image.fromarray((np.random.default_rng(0).random((40, 30, 3)) * 255).astype(np.uint8)).save(buffer, "PNG")
    app.file_uploader(key="uploads").set_value([("noise.png", buffer.getvalue(), "image/png"),
                                                ("broken.png", b"\x89PNG not really", "image/png")]).run()
    assert not app.exception
    assert any("broken.png" in e.value.replace("\\", "") for e in app.error)  # messages are markdown-escaped
    titles = [json.loads(c.proto.spec)["layout"]["title"]["text"] for c in app.get("plotly_chart")]
    assert "Top-5 prediction" in titles, titles  # the good upload was probed despite the broken one


def test_specialisation_builds_its_caches_then_shows_curves(app):
    app.switch_page("dashboard/pages/5_specialisation.py").run()
    _no_errors(app)
    assert not app.get("plotly_chart")  # the fixture's folder has no val cache: the page offers to build it
    [build] = [b for b in app.button if b.label == "Build them"]
    build.click().run()
    app.run()
    _no_errors(app)
    names = {trace.get("name") for c in app.get("plotly_chart") for trace in json.loads(c.proto.spec)["data"]}
    assert {"S", "random (mean of 10)"} <= names, names  # the top-k curves against the random band
    app.radio(key="spec_method").set_value("U|T").run()
    _no_errors(app)


def test_the_probes_map_follows_a_new_image_to_its_own_heads(app):
    app.switch_page("dashboard/pages/3_probe.py").run()

    def mapped_and_driving():
        [mapped] = [m for m in app.multiselect if m.label == "Heads mapped (summed)"]
        [driving] = [s for s in app.selectbox if s.label == "Head (strongest push first)"]
        return mapped.value, driving.options

    seen = set()
    for row in range(8):  # images whose strongest heads differ: each map starts from the image's own three
        app.number_input(key="probe_row").set_value(row).run()
        _no_errors(app)
        mapped, driving = mapped_and_driving()
        assert [f"L{l}H{h}" for l, h in mapped] == driving[:3]
        seen.add(tuple(mapped))
    assert len(seen) > 1  # the rows did give different heads, so the check above could have failed


def test_a_widget_change_on_the_probe_page_does_not_run_the_model(app, monkeypatch):
    import residual_core.read.probe as probe_module
    from dashboard.state import probe_cached

    calls = []
    real = probe_module.probe_images
    monkeypatch.setattr(probe_module, "probe_images", lambda *a, **k: (calls.append(1), real(*a, **k))[1])
    probe_cached.clear()
    app.switch_page("dashboard/pages/3_probe.py").run()
    _no_errors(app)
    assert len(calls) == 1
    app.radio(key="probe_mode").set_value("zero").run()
    app.multiselect(key="probe_heads").set_value([(0, 0)]).run()
    _no_errors(app)
    assert len(calls) == 1  # counterfactuals are arithmetic on the cached decomposition


def _click(at: AppTest, label: str) -> AppTest:
    [button] = [b for b in at.button if b.label.startswith(label)]
    return button.click().run()


def test_alignment_trains_lists_results_and_applies_lambda_to_the_lab(app):
    app.switch_page("dashboard/pages/6_alignment.py").run()
    _no_errors(app)
    if any(b.label == "Build them" for b in app.button):
        _click(app, "Build them")
        app.run()
    _no_errors(app)
    [method] = [s for s in app.selectbox if s.label == "Method"]
    method.set_value("coarse")
    [epochs] = [n for n in app.number_input if n.label == "Max epochs"]
    epochs.set_value(2)
    _click(app, "Train")
    _no_errors(app)
    table = app.dataframe[0].value
    assert "coarse" in list(table["method"]) and table["parameters"].iloc[0] > 0
    assert 0 <= table["test at λ = 1"].iloc[0] <= 1  # where the heads-only method starts, beside zero-shot
    assert any("Learned λ" in s.value for s in app.subheader)
    _click(app, "Apply to the ablation lab")
    _no_errors(app)
    assert app.title[0].value == "Ablation lab"
    mask = app.session_state["mask"]
    assert mask.scales and app.session_state["basis_from"]
    assert "basis" in app.query_params
    from residual_core.read.ablation import evaluate
    from residual_core.read.cache import load_cache

    lab_cache = load_cache(app.session_state["cache_path"])  # the lab shows the λ-rescaled model's accuracy
    assert app.metric[0].value == f"{evaluate(lab_cache, mask).accuracy:.2%}"
    why = [c.value for c in app.caption if "PCs are rescaled by λ" in c.value]  # and why it is not Alignment's
    assert why and "keeps only the heads" in why[0] and "trained numbers" in why[0], why


def test_compare_shows_spectral_cosines_and_matched_pcs(app, cache_root):
    from residual_core.build.pipeline import PrecomputeSpec, precompute

    precompute(PrecomputeSpec(model="tiny-random", dataset="demo-world/colour", split="val", limit=200,
                              cache_dir=str(cache_root), batch_size=64))
    app.switch_page("dashboard/pages/7_compare.py").run()
    _no_errors(app)
    assert app.title[0].value == "Compare"
    assert len(app.get("plotly_chart")) == 1
    pcs = app.table[0].value  # a table: its texts wrap instead of being cut at 1280 px
    assert list(pcs.columns)[:2] == ["nearest texts here", "cos"] and len(pcs) >= 1
    assert (pcs["cos"].astype(float).abs() <= 1.0001).all()
    app.selectbox(key="head").set_value(1).run()
    _no_errors(app)


def test_specialisation_shows_jaccard_across_datasets(app):
    app.switch_page("dashboard/pages/5_specialisation.py").run()
    if any(b.label == "Build them" for b in app.button):
        _click(app, "Build them")
        app.run()
    app.multiselect(key="spec_datasets").set_value(["mnist-offline", "demo-world/shape"]).run()
    if any(b.label.startswith("Build the missing") for b in app.button):
        _click(app, "Build the missing")
        app.run()
    _no_errors(app)
    assert any("Jaccard" in str(c.proto.spec) for c in app.get("plotly_chart"))


def test_every_page_works_on_a_transformers_clip_cache(tmp_path, open_app):
    # the second model family end to end: a cache of a transformers CLIPModel behind every page
    from residual_core.build.pipeline import PrecomputeSpec, precompute

    precompute(PrecomputeSpec(model="hf-tiny-random", dataset="demo-world/shape", split="test", limit=60,
                              cache_dir=str(tmp_path), batch_size=30))
    at = open_app(tmp_path, {"model": "hf-tiny-random", "dataset": "demo-world/shape", "split": "test", "n": "60"})
    _no_errors(at)
    caption = at.caption[0].value.replace("\\", "")  # markdown-escaped
    assert caption.startswith("hf-tiny-random on demo-world/shape (60 images")
    for page in PAGES:
        at.switch_page(page).run()
        _no_errors(at)
    at.switch_page("dashboard/pages/3_probe.py").run()
    buffer = io.BytesIO()
    Image.new("RGB", (40, 40), "red").save(buffer, "PNG")
    at.file_uploader(key="uploads").set_value([("red.png", buffer.getvalue(), "image/png")]).run()
    _no_errors(at)
    assert at.get("plotly_chart")


def test_a_pc_beyond_the_pills_from_a_link_stays_off_and_is_named(cache_root, open_app, monkeypatch, tiny_cache):
    from dashboard import state
    from dashboard.view import encode_mask
    from residual_core.read.ablation import AblationMask

    monkeypatch.setattr(state, "PC_PILLS", 4)  # the tiny cache has 18 PCs: pills for 4, the link names PC 10
    mask = AblationMask(pcs=frozenset({(1, 2, 9), (1, 2, 1)}))
    at = open_app(cache_root, {"model": "tiny-random", "dataset": "mnist-offline", "split": "test", "n": "300",
                               "layer": "1", "head": "2", "mask": encode_mask(mask)})
    at.switch_page("dashboard/pages/4_ablation_lab.py").run()
    _no_errors(at)
    assert at.session_state["mask"].pcs == mask.pcs
    assert any("PC10" in c.value for c in at.caption), [c.value for c in at.caption]
    from residual_core.read.ablation import evaluate

    assert at.metric[0].value == f"{evaluate(tiny_cache, mask).accuracy:.2%}"  # PC 10 counts in the number shown


def test_accuracy_changes_are_points_and_noise_is_left_blank_on_the_heads_map(app, tiny_cache):
    import json

    from residual_core.read.cache import accuracy_noise
    from residual_core.engine.units import points

    assert points(-0.059) == "-5.9 pp" and points(0.1234, 2) == "+12.34 pp"
    app.selectbox(key="metric").set_value("delta_acc_mean_ablated").run()
    _no_errors(app)
    p = tiny_cache.baseline_accuracy()
    noise = 100 * np.sqrt(p * (1 - p) / tiny_cache.n_images)  # the standard error of the accuracy, written out here
    assert accuracy_noise(tiny_cache) * 100 == pytest.approx(noise)
    assert any(f"±{noise:.1f} pp" in c.value for c in app.caption), [c.value for c in app.caption]
    spec = json.loads(app.get("plotly_chart")[0].proto.spec)
    cells = [t for row in spec["data"][0]["text"] for t in row]
    delta = (np.asarray(tiny_cache.head_ablated_acc) - tiny_cache.baseline_accuracy()) * 100
    assert [t == "" for t in cells] == list(np.abs(delta) < noise)  # blank exactly where the change is noise
    assert not {"0.00", "-0.00", "−0.00"} & set(cells)
    assert spec["data"][0]["colorbar"]["title"]["text"] == "Δ accuracy (pp)"


def test_the_lab_says_which_heads_are_off_after_a_preset(app, tiny_cache):
    app.switch_page("dashboard/pages/4_ablation_lab.py").run()
    app.selectbox(key="lab_preset").set_value("keep only the selected head").run()
    app.button[[b.label for b in app.button].index("Apply")].click().run()
    _no_errors(app)
    kept = (app.session_state.layer, app.session_state.head)
    line = [c.value for c in app.caption if "heads off" in c.value]
    assert line == [f"7 of 8 heads off; on: L{kept[0]}: H{kept[1]}"], line
    assert app.metric[0].delta.endswith(" pp") or app.metric[0].delta == "no change"


def test_every_class_and_head_is_labelled(tiny_cache):
    from dashboard import figures

    chart = figures.per_class_bars(("circle", "square", "triangle", "star", "cross", "heart"), np.ones(6), np.ones(6))
    axis = chart.to_dict()["encoding"]["x"]["axis"]
    assert axis["labelOverlap"] is False  # Vega-Lite's greedy overlap dropped 3 of 6 names in the lab
    assert axis["labelAngle"] == 0 and "split" in axis["labelExpr"]  # a word a line: slanted names were cut
    fig = figures.compare_heatmap(np.zeros((2, 8)), ["a", "b"], tiny_cache.units, "t")
    assert list(fig.layout.xaxis.tickvals) == tiny_cache.units.head_labels()
    from residual_core.engine.units import UnitTable

    wide = figures.compare_heatmap(np.zeros((2, 32)), ["a", "b"], UnitTable(4, 8), "t")  # 32 names overlapped
    assert list(wide.layout.xaxis.ticktext) == ["L0 →", "L1 →", "L2 →", "L3 →"] and wide.layout.xaxis.tickangle == 0


def test_search_ranks_heads_for_a_concept_and_switches_them_off_in_the_lab(app, tiny_cache):
    from residual_core.explain.describe import search_heads

    app.switch_page("dashboard/pages/9_search.py").run()
    _no_errors(app)
    app.text_input(key="concept_text").set_value("!!!")
    app.button[[b.label for b in app.button].index("Search")].click().run()
    assert any("no words" in e.value for e in app.error)  # one line, the page still there
    app.text_input(key="concept_text").set_value("the number seven")
    app.button[[b.label for b in app.button].index("Search")].click().run()
    _no_errors(app)
    table = app.dataframe[0].value
    expected = search_heads(tiny_cache, app.session_state["concept"]["embeddings"])
    assert list(table["head"])[:3] == [f"L{r.layer}H{r.head}" for r in expected[:3]]
    from dashboard.state import head_pole_words

    words = head_pole_words(str(tiny_cache.path))
    assert list(table["its PC1 reads as"])[:3] == [words[r.layer][r.head] for r in expected[:3]]
    [switch] = [b for b in app.button if b.label.startswith("Switch these")]
    switch.click().run()
    _no_errors(app)
    assert app.title[0].value == "Ablation lab"
    assert app.session_state["mask"].heads == frozenset((r.layer, r.head) for r in expected[:3])


def test_the_head_explorer_and_the_heads_map_say_each_head_in_words(app, tiny_cache):
    from residual_core.explain.describe import textspan

    reading = textspan(tiny_cache, 10)[tiny_cache.head_index(1, 2)]
    app.switch_page("dashboard/pages/2_head_explorer.py").run()
    app.selectbox(key="layer").set_value(1).run()
    app.selectbox(key="head").set_value(2).run()
    _no_errors(app)
    assert any(s.value == "L1H2 in words" for s in app.subheader)
    words = [d.value for d in app.dataframe if "text" in d.value.columns][0]
    assert list(words["text"]) == [tiny_cache.texts[i] for i in reading.texts]
    from dashboard.state import head_weights

    read = head_weights(str(tiny_cache.path), "tiny-random", True, 0)[tiny_cache.head_index(1, 2)]
    first = tiny_cache.texts[read.texts[0][0][0]]  # the weights' reading beside it, in lines that wrap (not cut)
    assert [m for m in app.markdown if m.value.startswith("- **1**") and first.replace(" ", "") in
            m.value.replace("\\", "").replace(" ", "")], [m.value[:80] for m in app.markdown]
    app.switch_page("dashboard/pages/1_heads_map.py").run()
    app.toggle(key="words_in_cells").set_value(True).run()
    spec = json.loads(app.get("plotly_chart")[0].proto.spec)
    from dashboard.state import pole_labels

    plus, minus = (label for label, _ in pole_labels(tiny_cache, 0, 0))  # L0H0's first PC, read from its images
    first = plus.text or "no clear label"
    hover = spec["data"][1]["hovertext"][0]
    assert f"+ {first}" in hover and f"− {minus.text or 'no clear label'}" in hover
    cell = spec["data"][0]["text"][0][0]  # two lines of at most 12 characters, broken between words
    assert all(len(line) <= 12 for line in cell.split("<br>")) and len(cell.split("<br>")) <= 2
    assert cell.replace("<br>", " ").rstrip("…") == first[:len(cell.replace("<br>", " ").rstrip("…"))]


def test_the_probe_draws_where_the_heads_look_over_the_image(app, tiny_cache):
    app.switch_page("dashboard/pages/3_probe.py").run()
    _no_errors(app)
    overlays = [json.loads(c.proto.spec) for c in app.get("plotly_chart")
                if json.loads(c.proto.spec)["data"][0]["type"] == "image"]
    assert overlays, "no overlay"
    heat = overlays[0]["data"][1]
    assert heat["type"] == "heatmap" and heat["zmid"] == 0 and heat["colorbar"]["title"]["text"]
    z = heat["z"]  # Plotly 6 sends numpy arrays as typed arrays: {"dtype", "bdata", "shape"}
    shape = tuple(int(v) for v in z["shape"].split(",")) if isinstance(z, dict) else np.asarray(z).shape
    assert shape == (4, 4)  # the tiny model's 32 px in 8 px patches
    line = next(m.value for m in app.markdown if "mostly from the" in m.value)
    heads_part = line.split(" push")[0]
    assert (" push toward" in line or " push away" in line) == ("," in heads_part)  # L3H6 pushes; L3H6, L2H0 push
    assert "% of that push; toward +" in line and ", away " in line  # both signs' sums, the dominant one described
    app.radio(key="where_kind").set_value("one head's PC").run()
    _no_errors(app)


def test_the_head_explorer_draws_its_pole_images_maps_on_request(app, monkeypatch):
    import residual_core.read.probe as probe_module
    from dashboard.state import probe_cached

    calls = []
    real = probe_module.probe_images
    monkeypatch.setattr(probe_module, "probe_images", lambda *a, **k: (calls.append(len(a[2])), real(*a, **k))[1])
    probe_cached.clear()
    app.switch_page("dashboard/pages/2_head_explorer.py").run()
    images_before = len(app.get("image"))
    assert calls == []  # nothing runs the model until asked
    app.button(key="pole_maps_button").click().run()
    _no_errors(app)
    assert calls == [16] and len(app.get("image")) == images_before + 2
    assert any("where it comes from" in img.caption for element in app.get("image") for img in element.proto.imgs)


def test_on_the_demo_world_pole_labels_are_read_from_the_images_with_their_evidence(tmp_path, open_app):
    from residual_core.build.pipeline import PrecomputeSpec, precompute

    precompute(PrecomputeSpec(model="demo", dataset="demo-world/shape", limit=500, cache_dir=str(tmp_path)))
    at = open_app(tmp_path, {"model": "demo", "dataset": "demo-world/shape", "n": "500", "layer": "3", "head": "6"})
    at.switch_page("dashboard/pages/2_head_explorer.py").run()
    _no_errors(at)
    # L3H6 PC1 − : its nearest text says "many squares at the top" over triangles; read from its images it is right
    minus = [m.value.replace("\\", "") for m in at.markdown if "PC1 − pole" in m.value]
    assert minus and "triangle shapes" in minus[0], [m.value for m in at.markdown][:12]
    captions = [img.caption.replace("\\", "").replace("\u2060", "") for element in at.get("image") for img in element.proto.imgs]
    assert any("of its top 8 images read as" in c and "nearest texts: many squares at the top" in c for c in captions)
    assert not [w.value for w in at.warning if "does not name" in w.value]  # the shown labels are right here
    from dashboard import tours

    view = {"model": "demo", "dataset": "demo-world/shape", "n": "500", "layer": "3", "head": "6", "pc": "0"}
    steps = (tours.Step("The head", "head", view), tours.Step("In words", "words", view))
    talk = open_app(tmp_path, {"tour_data": tours.encode(tours.Tour("T", steps))})
    talk.switch_page("dashboard/pages/8_present.py").run()
    assert any("PC1 − pole: triangle shapes" in m.value.replace("\\", "") for m in talk.markdown)  # the slide too


def test_the_scorecard_page_says_where_there_is_no_ground_truth(app):
    app.switch_page("dashboard/pages/10_scorecard.py").run()
    _no_errors(app)
    assert any("no ground truth" in i.value for i in app.info)
    agree, purity = app.dataframe[0].value, app.dataframe[1].value
    assert {"nearest ↔ TextSpan", "TextSpan ↔ weights", "data ↔ weights", "texts two methods name"} <= set(agree.columns)
    assert len(agree) == 2 * 4 and agree["data ↔ weights"].between(0, 1 + 1e-9).all()  # tiny-random: 2 layers × 4 heads
    assert list(purity.columns[:3]) == ["head", "PC", "purity@8 by class"]
    assert purity["purity@8 by class"].is_monotonic_decreasing


def test_the_scorecard_page_scores_the_demo_worlds_explanations_and_shows_failures(tmp_path, open_app):
    from residual_core.build.pipeline import PrecomputeSpec, precompute

    precompute(PrecomputeSpec(model="tiny-random", dataset="demo-world/shape", limit=500, cache_dir=str(tmp_path)))
    at = open_app(tmp_path, {"model": "tiny-random", "dataset": "demo-world/shape", "n": "500"})
    at.switch_page("dashboard/pages/10_scorecard.py").run()
    _no_errors(at)
    at.button[[b.label for b in at.button].index("Score the explanations")].click().run(timeout=600)
    _no_errors(at)
    table = at.dataframe[0].value
    assert list(table["method"]) == ["read from the images", "nearest texts per PC", "TextSpan", "weights' directions",
                                     "random directions", "random labels", "random heads"]
    assert {"labelled", "label AP / ceiling", "AP above chance / ceiling", "purity@8"} <= set(table.columns)
    assert all(len(cell.split(" / ")) == 2 for cell in table["AP above chance / ceiling"])
    assert any("Heatmaps:" in c.value for c in at.caption)
    predicts = at.dataframe[1].value  # does agreement between methods predict a right label?
    assert "data ↔ weights" in list(predicts["agreement"]) and predicts["p"].between(0, 1).all()
    at.selectbox(key="scorecard_method").set_value("nearest texts per PC").run()
    assert [m for m in at.markdown if "labelled" in m.value]  # the failures, each with its images

