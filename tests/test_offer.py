"""What a server offers: the operator's models and datasets first (so it opens on them), then what works
offline here, then what is already built."""

from dashboard.offer import server_offer


def test_a_server_started_with_a_model_and_dataset_opens_on_them(tmp_path):
    images = tmp_path / "photos"
    offer = server_offer(["--model", "tiny-random", "--dataset", f"folder:{images}"], {"RESIDUAL_CACHE": str(tmp_path)})
    assert (offer.default_model, offer.default_dataset) == ("tiny-random", f"folder:{images}")
    assert "demo" in offer.models and "demo-world/shape" in offer.datasets  # the offline ones stay offered


def test_without_a_choice_the_demo_model_on_the_worlds_shapes_opens(tmp_path):
    offer = server_offer([], {"RESIDUAL_CACHE": str(tmp_path)})
    assert (offer.default_model, offer.default_dataset) == ("demo", "demo-world/shape")


def test_the_environment_names_models_like_the_command_line(tmp_path):
    offer = server_offer([], {"RESIDUAL_CACHE": str(tmp_path), "RESIDUAL_MODELS": "hf-tiny-random",
                              "RESIDUAL_DATASETS": "mnist-offline"})
    assert (offer.default_model, offer.default_dataset) == ("hf-tiny-random", "mnist-offline")


def test_a_link_chooses_among_the_offered_text_banks_and_nothing_else(tmp_path):
    from dashboard.view import parse_view, to_query
    from residual_core.engine.textbank import PHOTO_BANK_PATH

    mine = tmp_path / "birds.txt"
    mine.write_text("a photo of a heron\na photo of a gull\n")
    offer = server_offer(["--text-bank", str(mine)], {"RESIDUAL_CACHE": str(tmp_path)})
    assert offer.bank_names == ("default", "demo world words", "photo words", "birds")
    view, notices = parse_view({"bank": "photo words"}, offer)
    assert view.bank == "photo words" and offer.bank_path(view.bank) == str(PHOTO_BANK_PATH) and not notices
    assert to_query(view)["bank"] == "photo words" and "bank" not in to_query(parse_view({}, offer)[0])
    view, notices = parse_view({"bank": "/etc/passwd"}, offer)
    assert view.bank == "default" and offer.bank_path(view.bank) is None and "text bank" in notices[0]
    assert offer.bank_path("birds") == str(mine)
