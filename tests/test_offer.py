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
