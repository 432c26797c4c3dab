import io

import numpy as np
import pytest
from PIL import Image

from residual_core.data.images import MAX_SIDE, ImageInputError, open_image_bytes


def _encode(image: Image.Image, fmt: str, **kw) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **kw)
    return buffer.getvalue()


def test_empty_garbage_and_truncated_uploads_are_refused_clearly():
    with pytest.raises(ImageInputError, match="empty"):
        open_image_bytes(b"", "a.png")
    with pytest.raises(ImageInputError, match="not an image"):
        open_image_bytes(b"hello, I am text", "notes.txt")
    good = _encode(Image.new("RGB", (64, 64), (10, 200, 30)), "JPEG")
    with pytest.raises(ImageInputError, match="damaged or truncated"):
        open_image_bytes(good[: len(good) // 2], "half.jpg")


def test_decompression_bomb_is_refused():
    bomb = _encode(Image.new("1", (9000, 9000)), "PNG")  # tiny file, 81 M pixels
    with pytest.raises(ImageInputError, match="pixels|bomb"):
        open_image_bytes(bomb, "bomb.png")


@pytest.mark.parametrize("mode", ["CMYK", "P", "LA", "RGBA", "L"])
def test_colour_modes_become_rgb(mode):
    image = Image.new("RGB", (20, 10), (200, 40, 40)).convert(mode)
    fmt = "JPEG" if mode == "CMYK" else "PNG"
    loaded = open_image_bytes(_encode(image, fmt), f"x.{fmt.lower()}")
    assert loaded.image.mode == "RGB" and loaded.image.size == (20, 10)


def test_sixteen_bit_is_rescaled():
    pixels = (np.linspace(0, 65535, 100).reshape(10, 10)).astype(np.uint16)
    loaded = open_image_bytes(_encode(Image.fromarray(pixels), "PNG"), "deep.png")
    values = np.asarray(loaded.image)[..., 0]
    assert values.min() == 0 and values.max() == 255 and any("8 bits" in n for n in loaded.notes)


def test_animation_takes_the_first_frame():
    frames = [Image.new("RGB", (16, 16), c) for c in ((255, 0, 0), (0, 0, 255))]
    buffer = io.BytesIO()
    frames[0].save(buffer, "GIF", save_all=True, append_images=frames[1:])
    loaded = open_image_bytes(buffer.getvalue(), "anim.gif")
    assert loaded.image.getpixel((8, 8))[0] > 200 and any("first frame" in n for n in loaded.notes)


def test_exif_rotation_is_applied_and_large_images_downscaled():
    image = Image.new("RGB", (40, 20), (0, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise
    loaded = open_image_bytes(_encode(image, "JPEG", exif=exif), "phone.jpg")
    assert loaded.image.size == (20, 40)
    big = open_image_bytes(_encode(Image.new("RGB", (3000, 1500)), "PNG"), "big.png")
    assert max(big.image.size) == MAX_SIDE and any("downscaled" in n for n in big.notes)


def test_a_16_bit_image_is_brought_to_8_bits_in_its_own_depth():
    from residual_core.data.images import _to_8_bits

    pixels = np.array([[0, 1000], [30000, 65535]], dtype=np.uint16)
    assert _to_8_bits(pixels).tolist() == [[0, 4], [117, 255]]
    flat = np.full((3, 3), 7, np.uint16)
    assert _to_8_bits(flat).tolist() == np.zeros((3, 3), np.uint8).tolist()
    floats = np.array([[np.nan, 1.0], [0.0, 2.0]], np.float32)
    assert _to_8_bits(floats).dtype == np.uint8  # a NaN never becomes a wrong number or an exception


def test_decoding_waits_for_the_server_wide_budget_and_refuses_when_it_stays_full():
    import threading

    from residual_core.data.images import DecodeBudget, ImageInputError

    budget = DecodeBudget(100)
    order, finish = [], threading.Event()

    def second() -> None:
        with budget.hold(50, "second"):
            order.append(("second", budget.free))
            finish.wait(5)

    with budget.hold(80, "first"):
        waiter = threading.Thread(target=second)
        waiter.start()
        waiter.join(0.2)
        assert order == [] and budget.free == 20  # the second waits: 80 + 50 > 100
        with pytest.raises(ImageInputError, match="server is decoding"):
            with budget.hold(30, "third", wait_s=0.05):
                pass
        order.append("first done")
    finish.set()
    waiter.join(5)
    assert order == ["first done", ("second", 50)] and budget.free == 100
    with budget.hold(10_000, "huge", wait_s=0.01):  # larger than the budget: waits for all of it, then runs alone
        assert budget.free == 0


def test_a_folder_image_over_the_pixel_cap_is_skipped_by_name(tmp_path, monkeypatch):
    from residual_core.data import sources
    from residual_core.data.datasets import load_dataset
    from residual_core.data.sources import ImageReadError

    monkeypatch.setattr(sources, "MAX_PIXELS", 1_000)
    for cls in ("a", "b"):
        (tmp_path / cls).mkdir()
        Image.new("RGB", (20, 20)).save(tmp_path / cls / "small.png")
        Image.new("RGB", (40, 40)).save(tmp_path / cls / "big.png")  # 1,600 pixels: over the lowered cap
    source = load_dataset(f"folder:{tmp_path}", "all")
    big = source.ids.index("a/big.png")
    with pytest.raises(ImageReadError, match="a/big.png: .*40×40 pixels"):
        source.image(big)
    assert source.image(source.ids.index("a/small.png")).size == (20, 20)
