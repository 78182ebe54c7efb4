"""Decode untrusted images (phone uploads, dataset files) into RGB, and preprocess them.

Everything a user can get wrong -- an empty upload, a web page saved as ``.jpg``, an
SVG, an iPhone HEIC, a truncated download, a decompression bomb -- becomes a
``PlaygroundError`` with a one-line message; nothing else escapes ``open_image``.
"""

from __future__ import annotations

import codecs
import io
import os
import warnings
from typing import BinaryIO

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from core.errors import PlaygroundError

MAX_PIXELS: int = 40_000_000
MAX_BYTES: int = 50 * 1024 * 1024
IMAGE_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")

# Only these decoders ever see user bytes: PIL can open dozens of formats, some of which
# (EPS via Ghostscript, for one) are a needless attack surface. "JPEG" also covers the
# multi-picture (MPO) JPEGs many phones write.
_FORMATS: tuple[str, ...] = ("JPEG", "PNG", "WEBP", "BMP", "GIF", "TIFF")
_WHAT_TO_DO = "upload a JPEG, PNG, WEBP, BMP, GIF or TIFF"

ImageSource = bytes | bytearray | memoryview | str | os.PathLike | BinaryIO


def open_image(
    source: ImageSource,
    *,
    name: str | None = None,
    max_pixels: int = MAX_PIXELS,
    max_bytes: int = MAX_BYTES,
) -> Image.Image:
    """Decode one untrusted image to an RGB PIL image, or raise PlaygroundError (message names `name` or the path).

    ``source`` is raw bytes (e.g. ``UploadedFile.getvalue()``), a file path, or a binary
    file object (read from its current position). The result is fully loaded and holds
    no reference to the file. EXIF orientation is applied, only the first frame of an
    animation is kept, and transparency is composited on white.
    """
    label = _label(source, name)
    data = _read_bytes(source, label, max_bytes)
    if not data:
        raise PlaygroundError(f"{label} is empty (0 bytes); {_WHAT_TO_DO}")
    _refuse_known_non_images(data, label)

    try:
        # PIL only warns between MAX_IMAGE_PIXELS and twice that; an error stops it
        # before it allocates. catch_warnings restores the filters afterwards instead of
        # touching Image.MAX_IMAGE_PIXELS, which every other PIL user in the process shares.
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=_FORMATS) as img:
                width, height = img.size
                # The header is parsed but no pixels are decoded yet: refuse here so a
                # few-kB file declaring 20000x20000 never gets its 400 MB allocated.
                if width * height > max_pixels:
                    raise PlaygroundError(
                        f"{label} is {width}x{height} pixels, more than the limit of "
                        f"{max_pixels:,} pixels; resize it smaller and upload it again"
                    )
                img.load()
                img = _apply_exif_orientation(img)
                return _to_rgb(img, label)
    except PlaygroundError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise PlaygroundError(
            f"{label} declares more pixels than PIL will decode safely (a possible decompression bomb); "
            f"resize it under {max_pixels:,} pixels and upload it again"
        ) from exc
    except UnidentifiedImageError as exc:
        raise PlaygroundError(
            f"{label} is not an image PIL can read ({_describe_unknown(data)}); {_WHAT_TO_DO}"
        ) from exc
    except MemoryError as exc:
        raise PlaygroundError(f"{label} is too large to decode in memory; resize it smaller") from exc
    # Decoders fed hostile bytes fail with whatever type they like (OSError, SyntaxError,
    # ValueError, struct.error, ...); for the user every one of them means a broken file.
    except Exception as exc:
        raise PlaygroundError(
            f"{label} is truncated or corrupt ({_one_line(exc)}); re-export or re-download it"
        ) from exc


def prepare_image(img: Image.Image, size: int) -> torch.Tensor:
    """Deterministic eval preprocessing shared by training-data caching and prediction.

    Resize so the shorter side == ``size`` (bilinear, antialiased) and center-crop
    ``size`` x ``size``; returns a uint8 tensor (3, size, size). No randomness ever.
    An RGB image already ``size`` x ``size`` is returned unchanged.
    """
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"size must be a positive int, got {size!r}")
    if img.mode != "RGB":
        img = _to_rgb(img, "image")
    width, height = img.size
    if (width, height) != (size, size):
        # Resampling only the centred square box gives the same pixels as resizing the
        # whole image and cropping afterwards, without building a huge intermediate for
        # panoramas (a 40000x1 strip would otherwise become 8960000x224 first).
        left, top, side = center_crop_box(width, height)
        img = img.resize(
            (size, size), Image.Resampling.BILINEAR, box=(left, top, left + side, top + side)
        )
    array = np.array(img, dtype=np.uint8)  # a copy: the tensor must not share PIL's buffer
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()


def center_crop_box(width: int, height: int) -> tuple[float, float, int]:
    """(left, top, side) of the centred square that ``prepare_image`` keeps of a width x height image.

    Everything outside it is never seen by the model (explanation maps are zero there).
    """
    side = min(width, height)
    return (width - side) / 2, (height - side) / 2, side


def load_for_model(source: ImageSource, size: int, *, name: str | None = None) -> torch.Tensor:
    """``open_image`` then ``prepare_image``: untrusted input to a (3, size, size) uint8 tensor."""
    return prepare_image(open_image(source, name=name), size)


def _label(source: ImageSource, name: str | None) -> str:
    if name is None:
        if isinstance(source, (str, os.PathLike)):
            name = os.fsdecode(os.fspath(source))
        elif isinstance(getattr(source, "name", None), str):
            name = source.name  # type: ignore[union-attr]
        else:
            name = "the image"
    return _one_line(name) or "the image"


def _one_line(text: object) -> str:
    # File names and PIL messages can carry newlines; the message must stay one line.
    return " ".join(str(text).split())


def _read_bytes(source: ImageSource, label: str, max_bytes: int) -> bytes:
    too_big = f"{label} is larger than the {max_bytes // (1024 * 1024)} MB limit; resize or recompress it"
    if isinstance(source, (bytes, bytearray, memoryview)):
        if len(source) > max_bytes:
            raise PlaygroundError(too_big)
        return bytes(source)
    if isinstance(source, (str, os.PathLike)):
        try:
            if os.path.isdir(source):
                raise PlaygroundError(f"{label} is a folder, not an image file; choose an image file")
            if os.path.getsize(source) > max_bytes:
                raise PlaygroundError(too_big)
            with open(source, "rb") as f:
                data = f.read(max_bytes + 1)  # the file may grow between stat and read
        except FileNotFoundError as exc:
            raise PlaygroundError(f"{label} does not exist; check the path") from exc
        except PermissionError as exc:
            raise PlaygroundError(f"{label} cannot be read (permission denied); check its permissions") from exc
        except OSError as exc:
            raise PlaygroundError(f"{label} cannot be read ({_one_line(exc)}); check the file") from exc
    else:
        if not callable(getattr(source, "read", None)):
            raise TypeError(f"open_image needs bytes, a path or a binary file object, not {type(source).__name__}")
        try:
            data = source.read(max_bytes + 1)
        except Exception as exc:
            raise PlaygroundError(f"{label} cannot be read ({_one_line(exc)}); upload it again") from exc
        if isinstance(data, str):
            raise TypeError("open_image needs a binary file object (opened with 'rb'), not a text one")
    if len(data) > max_bytes:
        raise PlaygroundError(too_big)
    return bytes(data)


def _refuse_known_non_images(data: bytes, label: str) -> None:
    head = data[:1024].lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if head.startswith(b"<svg") or (head.startswith(b"<?xml") and b"<svg" in head) or (
        head.startswith(b"<!doctype svg")
    ):
        raise PlaygroundError(
            f"{label} is an SVG vector drawing, which PIL cannot read; export it as PNG or {_WHAT_TO_DO}"
        )
    if head.startswith(b"<?xml"):
        raise PlaygroundError(f"{label} is an XML document, not an image; {_WHAT_TO_DO}")
    brand = data[8:12] if data[4:8] == b"ftyp" else b""
    if brand in (b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"mif1", b"msf1"):
        raise PlaygroundError(
            f"{label} is a HEIC/HEIF photo, which PIL cannot read; export it as JPEG "
            "(iPhone: Settings > Camera > Formats > Most Compatible) or convert it first"
        )
    if brand in (b"avif", b"avis"):
        raise PlaygroundError(f"{label} is an AVIF image, which is not supported; convert it to JPEG or PNG")


def _describe_unknown(data: bytes) -> str:
    head = data[:1024]
    lowered = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if lowered.startswith((b"<!doctype html", b"<html")):
        return "it is an HTML web page; save the image itself, not the page"
    # An incremental decoder tolerates a multi-byte character cut off at the sample's end.
    text = codecs.getincrementaldecoder("utf-8")(errors="replace").decode(head, final=False)
    printable = sum(ch.isprintable() or ch in "\t\r\n" for ch in text)
    if text and b"\x00" not in head and printable >= 0.95 * len(text):
        return "it looks like text"
    return "unknown or unsupported format"


def _apply_exif_orientation(img: Image.Image) -> Image.Image:
    try:
        return ImageOps.exif_transpose(img)
    # Broken EXIF is common in phone photos and says nothing about the pixels: keep
    # the image as stored rather than refuse a picture the user can see fine.
    except Exception:
        return img


def _to_rgb(img: Image.Image, label: str) -> Image.Image:
    """Convert any PIL mode to RGB: transparency onto white, high bit depths scaled to 8 bits."""
    mode = img.mode
    if mode == "RGB":
        return img.copy()
    if mode == "P" and ("transparency" in img.info or img.palette is not None and img.palette.mode == "RGBA"):
        img, mode = img.convert("RGBA"), "RGBA"
    if mode in ("RGBA", "LA", "La", "RGBa", "PA"):
        rgba = img.convert("RGBA")
        # Transparent pixels often hold black RGB; on white they look as the user saw them.
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    if mode.startswith("I") or mode == "F":
        return Image.fromarray(_to_uint8(np.asarray(img), mode)).convert("RGB")
    try:
        return img.convert("RGB")
    except ValueError as exc:
        raise PlaygroundError(
            f"{label} uses the {mode} colour mode, which cannot be converted to RGB; save it as an RGB JPEG or PNG"
        ) from exc


def _to_uint8(values: np.ndarray, mode: str) -> np.ndarray:
    """Map single-channel integer or float pixels to 0..255 instead of clipping them."""
    values = np.nan_to_num(values.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    lo, hi = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
    if mode.startswith("I;16"):
        scaled = values / 257.0
    elif mode == "I" and lo >= 0 and hi <= 65535:
        # 16-bit PNG/TIFF land in mode "I" on some PIL versions; data that never leaves
        # 0..255 is already 8-bit.
        scaled = values / 257.0 if hi > 255 else values
    elif mode == "F" and lo >= 0 and hi <= 1:
        scaled = values * 255.0
    elif lo >= 0 and hi <= 255:
        scaled = values
    elif hi > lo:
        scaled = (values - lo) * (255.0 / (hi - lo))
    else:
        scaled = np.zeros_like(values)
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
