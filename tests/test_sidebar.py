"""The sidebar and the main area's build: a failed build leaves its error alone; the text bank is chosen among what
the server offers and the cache follows it."""

import pytest


@pytest.fixture()
def app(cache_root, open_app):
    return open_app(cache_root, {"model": "tiny-random", "dataset": "mnist-offline", "split": "test", "n": "300"})


def _no_errors(at) -> None:
    assert not at.exception, at.exception
    assert not [e.value for e in at.error], [e.value for e in at.error]


def test_a_failed_build_leaves_one_error_and_no_building_header(tmp_path, open_app, monkeypatch):
    for cls in ("a", "b"):
        (tmp_path / "bad" / cls).mkdir(parents=True)
        for i in range(3):
            (tmp_path / "bad" / cls / f"{i}.png").write_bytes(b"not a png")
    monkeypatch.setenv("RESIDUAL_DATASETS", f"folder:{tmp_path / 'bad'}")
    root = tmp_path / "caches"
    root.mkdir()
    at = open_app(root, {"model": "tiny-random", "dataset": f"folder:{tmp_path / 'bad'}", "split": "all", "n": "500"})
    at.button(key="build_main").click().run()
    assert not at.exception, at.exception
    assert [e.value for e in at.error if "Could not build the cache" in e.value], [e.value for e in at.error]
    assert not [h.value for h in at.subheader if "Building the cache" in h.value]


def test_the_sidebar_chooses_the_text_bank_and_the_cache_follows(app):
    assert app.selectbox(key="bank").options == ["default", "demo world words", "photo words"]
    app.selectbox(key="bank").set_value("demo world words").run()
    assert app.session_state.cache_path  # the same texts as this dataset's default: the same cache
    app.selectbox(key="bank").set_value("photo words").run()
    _no_errors(app)
    assert not app.session_state.cache_path and app.session_state.bank == "photo words"  # its own cache, not built
