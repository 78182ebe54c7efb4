"""Decode untrusted images (phone uploads, dataset files) into RGB, and preprocess them.

Everything a user can get wrong -- an empty upload, a web page saved as ``.jpg``, an
SVG, an iPhone HEIC, a truncated download, a decompression bomb -- becomes a
``PlaygroundError`` with a one-line message; nothing else escapes ``open_image``.
"""

from __future__ import annotations

import codecs
import contextlib
import importlib.util
import io
import os
import sys
import warnings
from collections.abc import Callable, Sequence
from functools import lru_cache
from pathlib import Path
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
    except Exception as exc:
        raise PlaygroundError(_decoding_failed(exc, label, data, max_pixels)) from exc


def _decoding_failed(exc: Exception, label: str, data: bytes, max_pixels: int) -> str:
    """What a failure to decode means to the person who uploaded the file, and what to do."""
    if isinstance(exc, (Image.DecompressionBombError, Image.DecompressionBombWarning)):
        return (
            f"{label} declares more pixels than PIL will decode safely (a possible decompression bomb); "
            f"resize it under {max_pixels:,} pixels and upload it again"
        )
    if isinstance(exc, UnidentifiedImageError):
        return f"{label} is not an image PIL can read ({_describe_unknown(data)}); {_WHAT_TO_DO}"
    if isinstance(exc, MemoryError):
        return f"{label} is too large to decode in memory; resize it smaller"
    # Decoders fed hostile bytes fail with whatever type they like (OSError, SyntaxError,
    # ValueError, struct.error, ...); for the user every one of them means a broken file.
    return f"{label} is truncated or corrupt ({_one_line(exc)}); re-export or re-download it"


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
        img = img.resize((size, size), Image.Resampling.BILINEAR, box=(left, top, left + side, top + side))
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


def load_files_for_model(
    paths: Sequence[str | os.PathLike], size: int, *, use_torchvision: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """``load_for_model`` for many dataset files: (N, 3, size, size) uint8 and a bool mask of the files that loaded.

    The same pixels and the same refusals as ``load_for_model``, faster for the common dataset file: an
    ordinary 8-bit colour or grey JPEG that is already ``size`` x ``size`` (CIFAR-style) is decoded by
    torchvision's libjpeg, in one call for all of them, without PIL's Python work per file (parsing the
    headers, EXIF, copies), which costs several times the decode itself for small images. Any other file,
    or one that decoder rejects, goes through ``load_for_model``; unreadable files are left out of the mask.
    ``use_torchvision=False`` sends every file through ``load_for_model`` (same pixels, no torchvision import).
    """
    images = torch.empty(len(paths), 3, size, size, dtype=torch.uint8)
    pixels = images.numpy()  # numpy item assignment is several times cheaper than a tensor's
    ok = [False] * len(paths)
    contents = [_read_small_file(path) for path in paths]
    decode = fast_jpeg_decoder() if use_torchvision and size * size <= MAX_PIXELS else None
    fast = [i for i, data in enumerate(contents) if decode and data is not None and _plain_jpeg_size(data) == (size, size)]
    if fast:
        for i, decoded in zip(fast, decode([contents[i] for i in fast])):
            if decoded is not None and decoded.shape == (3, size, size):
                pixels[i], ok[i] = decoded.numpy(), True
    for i, data in enumerate(contents):
        if ok[i]:
            continue
        try:  # PIL decides, so a file the fast decoder rejected is kept or refused exactly as before
            pixels[i] = load_for_model(paths[i] if data is None else data, size, name=os.fsdecode(paths[i])).numpy()
            ok[i] = True
        except PlaygroundError:
            pass
    return images, torch.tensor(ok, dtype=torch.bool)


def _read_small_file(path: str | os.PathLike) -> bytearray | None:
    """A file's bytes in one read of its own size, or None when it is unreadable, too big or changing
    (``load_for_model`` then reads it itself and words the error)."""
    try:
        with open(path, "rb", buffering=0) as f:
            size = os.fstat(f.fileno()).st_size
            if size > MAX_BYTES:
                return None
            data = bytearray(size + 1)  # one byte more shows a file that grew since the stat
            if f.readinto(data) != size:
                return None
            del data[size:]
            return data
    except OSError:
        return None


# Markers a plain JPEG may carry before its first scan: JFIF, quantization and Huffman tables, restart
# interval, comments, an ICC profile (neither decoder applies it). EXIF and XMP (APP1) may rotate the
# image, Adobe's APP14 and MPF change what PIL does, other SOFs are lossless, arithmetic or hierarchical.
_PLAIN_JPEG_MARKERS = {0xE0, 0xE2, 0xDB, 0xC4, 0xDD, 0xFE}
_PLAIN_JPEG_SOF = {0xC0, 0xC1, 0xC2}  # baseline, extended sequential, progressive


def _plain_jpeg_size(data: bytes | bytearray) -> tuple[int, int] | None:
    """(width, height) of an 8-bit, 1- or 3-component JPEG with only plain headers, else None."""
    if data[:2] != b"\xff\xd8":
        return None
    i, end, size = 2, len(data), None
    while i + 4 <= end:
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker == 0xDA:  # start of scan: every header has been seen
            return size
        length = (data[i + 2] << 8) | data[i + 3]
        if marker in _PLAIN_JPEG_SOF:
            if size is not None or length < 8 or i + 10 > end or data[i + 4] != 8 or data[i + 9] not in (1, 3):
                return None
            size = ((data[i + 7] << 8) | data[i + 8], (data[i + 5] << 8) | data[i + 6])
        elif marker not in _PLAIN_JPEG_MARKERS or (marker == 0xE2 and data[i + 4 : i + 15] != b"ICC_PROFILE"):
            return None
        i += 2 + length
    return None


def _jpeg_op() -> Callable[[torch.Tensor], torch.Tensor] | None:
    """torchvision's libjpeg decode for one file's bytes -> (3, H, W) RGB uint8, or None without it.

    Importing torchvision costs 1-2 s (it imports its models, datasets and transforms), most of a cold load's
    time on a small machine; its JPEG decoder is one operator in its `image` extension library, which loads in
    milliseconds. So where torchvision is not imported yet, only that library is loaded (the operator
    `torchvision.io.decode_jpeg` itself calls on the CPU); where that fails, torchvision is imported as usual.
    """
    rgb = 3  # torchvision.io.ImageReadMode.RGB
    if "torchvision" not in sys.modules:
        with contextlib.suppress(Exception):
            if not hasattr(torch.ops.image, "decode_jpeg"):
                spec = importlib.util.find_spec("torchvision")
                folder = Path(next(iter(spec.submodule_search_locations)))  # type: ignore[union-attr]
                library = next(p for p in sorted(folder.iterdir()) if p.name.startswith("image") and p.suffix in (".so", ".pyd", ".dylib"))
                torch.ops.load_library(str(library))
            op = torch.ops.image.decode_jpeg
            return lambda data: op(data, rgb, False)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            from torchvision.io import ImageReadMode, decode_jpeg
    except Exception:  # no image extension, a removed API: PIL does all the decoding
        return None

    def decode_one(data: torch.Tensor) -> torch.Tensor:
        # torchvision 0.29 deprecates its decoders in favour of TorchCodec; a torchvision without them fails the
        # check in fast_jpeg_decoder, and PIL decodes everything.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            return decode_jpeg(data, mode=ImageReadMode.RGB)

    return decode_one


@lru_cache(maxsize=1)
def fast_jpeg_decoder() -> Callable[[list[bytearray]], list[torch.Tensor | None]] | None:
    """torchvision's JPEG decoder (JPEG files' bytes -> (3, H, W) uint8 each, None for one it cannot
    decode), if it gives exactly PIL's pixels here.

    Checked once per process on generated JPEGs of the kinds datasets hold (4:2:0, 4:4:4, progressive, grey),
    so a torchvision built against a libjpeg that rounds differently, or one without the decoder, is simply
    not used.
    """
    decode_one = _jpeg_op()
    if decode_one is None:
        return None

    def decode(files: list[bytearray]) -> list[torch.Tensor | None]:
        out: list[torch.Tensor | None] = []
        for f in files:
            try:
                out.append(decode_one(torch.frombuffer(f, dtype=torch.uint8)))
            except Exception:  # a damaged file: PIL decides what to make of it
                out.append(None)
        return out

    try:
        rng = np.random.default_rng(0)
        pixels = (rng.integers(0, 128, (32, 48, 3)) + np.linspace(0, 127, 48)[None, :, None]).astype(np.uint8)
        samples, expected = [], []
        for image, options in (
            (pixels, {}),
            (pixels, {"subsampling": 0, "quality": 95}),
            (pixels, {"progressive": True}),
            (pixels[..., 0], {}),
        ):
            buffer = io.BytesIO()
            Image.fromarray(image).save(buffer, "JPEG", **options)
            samples.append(bytearray(buffer.getvalue()))
            with Image.open(buffer) as reference:
                expected.append(torch.from_numpy(np.array(reference.convert("RGB"))).permute(2, 0, 1))
        got = decode(samples)
        if all(g is not None and torch.equal(g, e) for g, e in zip(got, expected)):
            return decode
    except Exception:
        pass
    return None


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
            size = os.path.getsize(source)
            if size > max_bytes:
                raise PlaygroundError(too_big)
            with open(source, "rb") as f:
                # read(max_bytes + 1) would allocate max_bytes for every small file; read what the stat
                # says, and on past it only if the file grew since.
                data = f.read(size + 1)
                if len(data) > size:
                    data += f.read(max_bytes + 1 - len(data))
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
    if head.startswith(b"<svg") or (head.startswith(b"<?xml") and b"<svg" in head) or (head.startswith(b"<!doctype svg")):
        raise PlaygroundError(f"{label} is an SVG vector drawing, which PIL cannot read; export it as PNG or {_WHAT_TO_DO}")
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
