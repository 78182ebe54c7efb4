"""open_image must turn every odd upload into RGB or a one-line PlaygroundError; prepare_image is deterministic."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from core.data.images import IMAGE_EXTENSIONS, MAX_PIXELS, load_for_model, open_image, prepare_image
from core.errors import PlaygroundError


def encode(img: Image.Image, fmt: str, **kwargs: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kwargs)
    return buf.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A valid PNG header declaring a huge 1-bit image, with almost no pixel data behind it."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")


def assert_refused(source: object, name_in_message: str, *words: str, **kwargs: object) -> str:
    with pytest.raises(PlaygroundError) as info:
        open_image(source, **kwargs)  # type: ignore[arg-type]
    message = str(info.value)
    assert "\n" not in message
    assert name_in_message in message
    for word in words:
        assert word in message.lower()
    return message


def assert_rgb(img: Image.Image, size: tuple[int, int]) -> None:
    assert img.mode == "RGB"
    assert img.size == size


# --- refusals -------------------------------------------------------------------


def test_empty_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "empty.jpg"
    path.write_bytes(b"")
    assert_refused(path, "empty.jpg", "empty")
    assert_refused(b"", "upload.png", "empty", name="upload.png")


def test_text_renamed_jpg_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "photo.jpg"
    path.write_text("these are my holiday notes, not a photo\n" * 5)
    message = assert_refused(path, "photo.jpg", "text")
    assert "JPEG" in message


def test_html_page_saved_as_jpg_is_refused() -> None:
    assert_refused(b"<!DOCTYPE html><html><body>hi</body></html>", "cat.jpg", "html", name="cat.jpg")


def test_random_bytes_are_refused() -> None:
    noise = np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes()
    assert_refused(noise, "noise.png", name="noise.png")


@pytest.mark.parametrize(
    "svg",
    [
        b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><rect/></svg>',
        b'\xef\xbb\xbf<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg"></svg>',
    ],
)
def test_svg_is_refused(svg: bytes) -> None:
    assert_refused(svg, "logo.svg", "svg", name="logo.svg")


def test_heic_is_refused_with_advice() -> None:
    heic = b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + b"\x00" * 64
    assert_refused(heic, "IMG_0001.HEIC", "heic", "jpeg", name="IMG_0001.HEIC")


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_truncated_file_is_refused(tmp_path: Path, fmt: str) -> None:
    noise = Image.fromarray(np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8))
    data = encode(noise, fmt)
    path = tmp_path / f"cut.{fmt.lower()}"
    path.write_bytes(data[: len(data) // 2])
    assert_refused(path, path.name, "truncated or corrupt")


def test_decompression_bomb_is_refused_before_decoding() -> None:
    bomb = png_header_only(20000, 20000)
    assert len(bomb) < 1000
    assert_refused(bomb, "bomb.png", "pixels", name="bomb.png")


def test_image_over_our_pixel_limit_but_under_pils_is_refused() -> None:
    side = int(MAX_PIXELS**0.5) + 10  # under PIL's own ~89 MP limit, so only our check stops it
    assert_refused(png_header_only(side, side), "big.png", "limit", name="big.png")


def test_pixel_and_byte_limits_are_parameters() -> None:
    data = encode(Image.new("RGB", (100, 100)), "PNG")
    assert_refused(data, "small.png", "limit", name="small.png", max_pixels=9999)
    assert_refused(data, "small.png", "limit", name="small.png", max_bytes=len(data) - 1)
    assert open_image(data, max_pixels=10000, max_bytes=len(data)).size == (100, 100)


def test_missing_path_and_folder_are_refused(tmp_path: Path) -> None:
    assert_refused(tmp_path / "nope.jpg", "nope.jpg", "does not exist")
    assert_refused(tmp_path, str(tmp_path), "folder")


# --- sizes, formats, modes --------------------------------------------------------


@pytest.mark.parametrize("size", [(1, 1), (4000, 30)])
def test_extreme_sizes_decode(size: tuple[int, int]) -> None:
    img = open_image(encode(Image.new("RGB", size, (10, 20, 30)), "PNG"))
    assert_rgb(img, size)
    assert img.getpixel((0, 0)) == (10, 20, 30)


@pytest.mark.parametrize("fmt", ["WEBP", "BMP", "TIFF", "PNG"])
def test_common_formats_decode(tmp_path: Path, fmt: str) -> None:
    path = tmp_path / f"img.{fmt.lower()}"
    Image.new("RGB", (12, 8), (200, 100, 50)).save(path, fmt, **({"lossless": True} if fmt == "WEBP" else {}))
    img = open_image(path)
    assert_rgb(img, (12, 8))
    assert img.getpixel((5, 5)) == (200, 100, 50)


def test_animated_gif_gives_first_frame() -> None:
    frames = [Image.new("RGB", (16, 16), colour) for colour in [(255, 0, 0), (0, 0, 255), (0, 255, 0)]]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    assert Image.open(io.BytesIO(data)).n_frames == 3
    img = open_image(data)
    assert_rgb(img, (16, 16))
    assert img.getpixel((8, 8)) == (255, 0, 0)


def test_animated_webp_gives_first_frame() -> None:
    frames = [Image.new("RGB", (16, 16), colour) for colour in [(0, 0, 255), (255, 0, 0)]]
    data = encode(frames[0], "WEBP", save_all=True, append_images=frames[1:], lossless=True)
    assert open_image(data).getpixel((8, 8)) == (0, 0, 255)


def test_palette_gif() -> None:
    img = Image.new("RGB", (10, 10), (0, 128, 255)).quantize(colors=4)
    assert img.mode == "P"
    out = open_image(encode(img, "GIF"))
    assert_rgb(out, (10, 10))
    assert out.getpixel((3, 3)) == (0, 128, 255)


def test_16_bit_png_keeps_mid_grey() -> None:
    grey = Image.fromarray(np.full((8, 8), 32768, dtype=np.uint16))
    assert grey.mode == "I;16"
    img = open_image(encode(grey, "PNG"))
    assert_rgb(img, (8, 8))
    assert all(abs(c - 128) <= 1 for c in img.getpixel((4, 4)))


def test_32_bit_int_and_float_images_are_scaled_not_clipped(tmp_path: Path) -> None:
    ints = Image.fromarray(np.array([[0, 65535]], dtype=np.int32))
    ints.save(tmp_path / "i.tif")
    assert ints.mode == "I"
    assert np.asarray(open_image(tmp_path / "i.tif"))[0, :, 0].tolist() == [0, 255]
    floats = Image.fromarray(np.array([[0.0, 0.5, 1.0]], dtype=np.float32))
    floats.save(tmp_path / "f.tif")
    assert floats.mode == "F"
    assert np.asarray(open_image(tmp_path / "f.tif"))[0, :, 0].tolist() == [0, 128, 255]


def test_grayscale_and_one_bit() -> None:
    assert open_image(encode(Image.new("L", (4, 4), 77), "PNG")).getpixel((0, 0)) == (77, 77, 77)
    one_bit = Image.new("1", (4, 4), 1)
    assert open_image(encode(one_bit, "PNG")).getpixel((0, 0)) == (255, 255, 255)


def test_cmyk_jpeg() -> None:
    cmyk = Image.new("CMYK", (16, 16), (0, 255, 255, 0))  # pure red in CMYK
    img = open_image(encode(cmyk, "JPEG", quality=95))
    assert_rgb(img, (16, 16))
    r, g, b = img.getpixel((8, 8))
    assert r > 200 and g < 60 and b < 60


def test_rgba_transparency_is_composited_on_white() -> None:
    rgba = Image.new("RGBA", (4, 4), (0, 0, 0, 0))
    rgba.putpixel((0, 0), (255, 0, 0, 255))
    img = open_image(encode(rgba, "PNG"))
    assert_rgb(img, (4, 4))
    assert img.getpixel((0, 0)) == (255, 0, 0)
    assert img.getpixel((3, 3)) == (255, 255, 255)


def test_la_and_palette_transparency_on_white() -> None:
    la = Image.new("LA", (2, 2), (0, 0))
    assert open_image(encode(la, "PNG")).getpixel((1, 1)) == (255, 255, 255)
    pal = Image.new("P", (2, 2), 0)
    pal.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    pal.putpixel((0, 0), 1)
    out = open_image(encode(pal, "PNG", transparency=0))
    assert out.getpixel((0, 0)) == (255, 0, 0)
    assert out.getpixel((1, 1)) == (255, 255, 255)


def test_exif_orientation_is_applied() -> None:
    img = Image.new("RGB", (40, 20), (0, 200, 0))
    exif = img.getexif()
    exif[0x0112] = 6  # Orientation: rotate 90 CW to display
    out = open_image(encode(img, "JPEG", exif=exif.tobytes()))
    assert_rgb(out, (20, 40))


def test_file_object_and_path_give_same_pixels_and_file_is_released(tmp_path: Path) -> None:
    path = tmp_path / "x.png"
    Image.new("RGB", (5, 7), (1, 2, 3)).save(path)
    with open(path, "rb") as f:
        from_file = open_image(f)
    from_path = open_image(str(path))
    path.unlink()  # the decoded image must not need the file any more
    assert from_file.tobytes() == from_path.tobytes()
    assert from_path.load() is not None and from_path.size == (5, 7)


def test_file_object_name_is_used_in_message() -> None:
    upload = io.BytesIO(b"not an image at all")
    upload.name = "upload.jpg"
    assert_refused(upload, "upload.jpg", "text")


def test_extensions_constant() -> None:
    assert IMAGE_EXTENSIONS == (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")


# --- prepare_image ----------------------------------------------------------------


def test_prepare_image_shape_dtype_and_determinism() -> None:
    rng = np.random.default_rng(2)
    img = Image.fromarray(rng.integers(0, 256, (37, 53, 3), dtype=np.uint8))
    first, second = prepare_image(img, 32), prepare_image(img, 32)
    assert first.shape == (3, 32, 32) and first.dtype == torch.uint8
    assert torch.equal(first, second)


def test_prepare_image_identity_when_already_sized() -> None:
    array = np.random.default_rng(3).integers(0, 256, (24, 24, 3), dtype=np.uint8)
    out = prepare_image(Image.fromarray(array), 24)
    assert torch.equal(out, torch.from_numpy(array).permute(2, 0, 1))


def test_prepare_image_center_crops_wide_and_tall_images() -> None:
    # Three vertical bands: red | green | blue. The centred square is green; only its
    # outermost columns may blend with the neighbours, as with resize-then-crop.
    wide = np.zeros((100, 300, 3), dtype=np.uint8)
    wide[:, :100, 0] = wide[:, 100:200, 1] = wide[:, 200:, 2] = 255
    out = prepare_image(Image.fromarray(wide), 50)
    assert out.shape == (3, 50, 50)
    inner = out[:, :, 2:-2]
    assert torch.all(inner[1] == 255) and torch.all(inner[0] == 0) and torch.all(inner[2] == 0)
    assert out[0, :, 0].max() < 128 and out[2, :, -1].max() < 128
    tall = prepare_image(Image.fromarray(wide.transpose(1, 0, 2).copy()), 50)
    assert torch.all(tall[1, 2:-2, :] == 255) and torch.all(tall[0, 2:-2, :] == 0)


def test_prepare_image_matches_resize_then_center_crop() -> None:
    from torchvision.transforms.v2 import functional as F

    y, x = np.mgrid[0:60, 0:90]
    smooth = np.stack([x * 2, y * 3, (x + y)], axis=-1).astype(np.uint8)
    ours = prepare_image(Image.fromarray(smooth), 32).float()
    ref = F.center_crop(F.resize(torch.from_numpy(smooth).permute(2, 0, 1), 32, antialias=True), 32).float()
    assert (ours - ref).abs().mean() < 2.0


def test_prepare_image_handles_tiny_and_non_rgb_inputs() -> None:
    assert prepare_image(Image.new("RGB", (1, 1), (9, 8, 7)), 4).tolist() == [[[9] * 4] * 4, [[8] * 4] * 4, [[7] * 4] * 4]
    assert prepare_image(Image.new("L", (10, 10), 5), 10).shape == (3, 10, 10)


def test_load_for_model() -> None:
    out = load_for_model(encode(Image.new("RGB", (4000, 30), (50, 60, 70)), "PNG"), 16, name="strip.png")
    assert out.shape == (3, 16, 16)
    assert out[:, 8, 8].tolist() == [50, 60, 70]
