"""Extract an uploaded dataset zip without letting it write outside its folder or fill the disk.

Every check that can be made from the central directory (paths, symlinks, encryption,
declared sizes, file count, compression ratio) runs before a single byte is written;
the byte limit is enforced again while streaming because declared sizes can lie.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import tempfile
import zipfile
from pathlib import Path, PurePosixPath

from core.errors import PlaygroundError

MAX_UNCOMPRESSED_BYTES = 2 * 1024**3
MAX_FILES = 200_000
MAX_RATIO = 200

# Small files of flat colour or text legitimately compress by far more than MAX_RATIO
# (a blank 224x224 BMP shrinks ~500x) and the total byte limit bounds them anyway.
_RATIO_MIN_BYTES = 1024 * 1024
_CHUNK = 1024 * 1024
_DRIVE = re.compile(r"^[A-Za-z]:")


def safe_extract_zip(
    zip_path: str | os.PathLike,
    dest: str | os.PathLike,
    *,
    max_bytes: int = MAX_UNCOMPRESSED_BYTES,
    max_files: int = MAX_FILES,
    max_ratio: float = MAX_RATIO,
    name: str | None = None,
) -> Path:
    """Extract ``zip_path`` into ``dest`` (which must not exist yet, or be empty) and return ``dest``.

    Raises PlaygroundError (naming ``name`` or the zip's file name) for a file that is not
    a zip, a corrupt or password-protected zip, members that would escape ``dest``
    (absolute paths, ``..``, drive letters, symlinks), and zip bombs: more than
    ``max_files`` files, more than ``max_bytes`` uncompressed, or a member over 1 MiB
    that expands more than ``max_ratio`` times. ``__MACOSX/`` and hidden files are
    skipped. Files are written into a temporary folder beside ``dest`` that is renamed
    into place at the end, so a failure leaves nothing half-extracted.
    """
    label = _one_line(name if name is not None else Path(zip_path).name) or "the zip file"
    dest = Path(dest)
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise PlaygroundError(f"cannot extract {label}: {dest} already exists; remove it or choose another folder")

    try:
        _refuse_huge_directory(zip_path, label, max_files)
        with zipfile.ZipFile(zip_path) as zf:
            plan = _plan(zf, label, max_bytes, max_files, max_ratio)
            dest.parent.mkdir(parents=True, exist_ok=True)
            staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".partial", dir=dest.parent))
            try:
                _extract(zf, plan, staging, label, max_bytes)
                if dest.exists():
                    dest.rmdir()  # empty (checked above); rename cannot replace a folder everywhere
                os.rename(staging, dest)
            except BaseException:
                shutil.rmtree(staging, ignore_errors=True)
                raise
    except PlaygroundError:
        raise
    except FileNotFoundError as exc:
        if not Path(zip_path).exists():
            raise PlaygroundError(f"{label} does not exist; check the path") from exc
        raise PlaygroundError(f"{label} could not be extracted ({_one_line(exc)}); try again") from exc
    except IsADirectoryError as exc:
        raise PlaygroundError(f"{label} is a folder, not a zip file; choose the .zip file") from exc
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError) as exc:
        raise PlaygroundError(
            f"{label} is not a zip file or is corrupt ({_one_line(exc)}); zip the dataset folder again and re-upload it"
        ) from exc
    except NotImplementedError as exc:
        raise PlaygroundError(
            f"{label} uses a compression method Python cannot read ({_one_line(exc)}); re-zip it with standard (deflate) compression"
        ) from exc
    except OSError as exc:
        # Disk full, permissions, a member that is both a file and a folder: all fixable
        # by the user, none of them a bug here.
        raise PlaygroundError(f"{label} could not be extracted ({_one_line(exc)}); check disk space and the zip's contents") from exc
    return dest


def _refuse_huge_directory(zip_path: str | os.PathLike, label: str, max_files: int) -> None:
    """Refuse by the entry count in the end record, before ZipFile builds an object per entry.

    A 200 MB upload can declare millions of tiny entries, and parsing them all would
    take gigabytes of memory before the per-file count in _plan ever runs.
    """
    end_record = getattr(zipfile, "_EndRecData", None)  # private, so degrade if it goes away
    index = getattr(zipfile, "_ECD_ENTRIES_TOTAL", None)
    if end_record is None or index is None:
        return
    with open(zip_path, "rb") as f:
        record = end_record(f)
    # Folders are entries too: leave room for them; _plan counts files exactly.
    if record and record[index] > 2 * max_files + 10_000:
        raise PlaygroundError(f"{label} contains more than {max_files:,} files; upload a smaller dataset")


def _plan(
    zf: zipfile.ZipFile, label: str, max_bytes: int, max_files: int, max_ratio: float
) -> list[tuple[zipfile.ZipInfo, tuple[str, ...]]]:
    """Validate every member from the central directory; return (member, safe path parts) to extract."""
    plan: list[tuple[zipfile.ZipInfo, tuple[str, ...]]] = []
    files = 0
    total = 0
    for info in zf.infolist():
        parts = _safe_parts(info.filename, label)
        if parts is None:
            continue
        if stat.S_ISLNK(info.external_attr >> 16):
            raise PlaygroundError(f"{label} contains a symbolic link ({_shown(info.filename)}), which is not allowed; zip real files only")
        if info.flag_bits & 0x1:
            raise PlaygroundError(f"{label} is password-protected; zip it again without a password")
        if not info.is_dir():
            files += 1
            total += info.file_size
            if files > max_files:
                raise PlaygroundError(f"{label} contains more than {max_files:,} files; upload a smaller dataset")
            if total > max_bytes:
                raise PlaygroundError(f"{label} would unpack to more than {_size(max_bytes)}; upload a smaller dataset")
            if info.file_size > _RATIO_MIN_BYTES and info.file_size > max_ratio * max(info.compress_size, 1):
                raise PlaygroundError(
                    f"{label} looks like a zip bomb: {_shown(info.filename)} expands "
                    f"{info.file_size / max(info.compress_size, 1):,.0f} times; upload a normal dataset zip"
                )
        plan.append((info, parts))
    if files == 0:
        raise PlaygroundError(
            f"{label} contains no files to extract (hidden files and __MACOSX are skipped); zip the dataset folder itself"
        )
    return plan


def _safe_parts(filename: str, label: str) -> tuple[str, ...] | None:
    """Path components that stay inside the destination, None to skip, or PlaygroundError."""
    # Some Windows tools write backslashes despite the zip spec; treat them as separators
    # so a "..\\" cannot slip past the checks and folders come out as folders.
    name = filename.replace("\\", "/")
    if name.startswith("/") or _DRIVE.match(name):
        raise PlaygroundError(f"{label} contains a member with an absolute path ({_shown(filename)}); zip the folder with relative paths")
    parts = tuple(part for part in PurePosixPath(name).parts if part not in ("", "."))
    if ".." in parts:
        raise PlaygroundError(f"{label} contains a member that points outside its folder ({_shown(filename)}); zip the folder again")
    if not parts or parts[0] == "__MACOSX" or any(part.startswith(".") for part in parts):
        return None
    return parts


def _extract(
    zf: zipfile.ZipFile,
    plan: list[tuple[zipfile.ZipInfo, tuple[str, ...]]],
    staging: Path,
    label: str,
    max_bytes: int,
) -> None:
    root = staging.resolve()
    written = 0
    for info, parts in plan:
        target = staging.joinpath(*parts)
        # _safe_parts already forbids escaping; this guards against anything it missed.
        if not target.resolve().is_relative_to(root):
            raise PlaygroundError(
                f"{label} contains a member that points outside its folder ({_shown(info.filename)}); zip the folder again"
            )
        if info.is_dir():
            target.mkdir(parents=True, exist_ok=True)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        with zf.open(info) as src, open(target, "wb") as out:
            while chunk := src.read(_CHUNK):
                written += len(chunk)
                if written > max_bytes:
                    raise PlaygroundError(f"{label} would unpack to more than {_size(max_bytes)}; upload a smaller dataset")
                out.write(chunk)


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


def _shown(member: str) -> str:
    text = _one_line(member)
    return text if len(text) <= 80 else text[:77] + "..."


def _size(n: int) -> str:
    for unit, scale in (("GB", 1024**3), ("MB", 1024**2), ("KB", 1024)):
        if n >= scale:
            return f"{n / scale:g} {unit}"
    return f"{n} bytes"
