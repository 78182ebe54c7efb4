"""safe_extract_zip must refuse hostile zips without writing anything, and extract honest ones."""

from __future__ import annotations

import stat
import zipfile
from pathlib import Path

import pytest

from core.data import archive
from core.data.archive import safe_extract_zip
from core.errors import PlaygroundError

MB = 1024 * 1024


def make_zip(path: Path, members: dict[str, bytes], *, compression: int = zipfile.ZIP_DEFLATED) -> Path:
    with zipfile.ZipFile(path, "w", compression) as zf:
        for name, data in members.items():
            zf.writestr(zipfile.ZipInfo(name), data, compress_type=compression)
    return path


def files_under(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


def assert_refused(zip_path: Path, out: Path, *words: str, **kwargs: object) -> None:
    """Refused with a one-line message naming the zip, and nothing left beside ``out``."""
    with pytest.raises(PlaygroundError) as info:
        safe_extract_zip(zip_path, out, **kwargs)  # type: ignore[arg-type]
    message = str(info.value)
    assert "\n" not in message
    assert zip_path.name in message
    for word in words:
        assert word in message.lower()
    assert not out.exists()
    assert list(out.parent.iterdir()) == []  # no staging folder, no escaped file


@pytest.fixture
def out(tmp_path: Path) -> Path:
    parent = tmp_path / "sandbox" / "extracted"
    parent.mkdir(parents=True)
    return parent / "dataset"


def test_valid_class_folder_zip_extracts(tmp_path: Path, out: Path) -> None:
    zip_path = tmp_path / "pets.zip"
    with zipfile.ZipFile(zip_path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("train/", b"")
        zf.writestr("train/cats/a.png", b"cat")
        zf.writestr("train/dogs/b.png", b"dog")
        zf.writestr("test/cats/c.png", b"cat2")
        zf.writestr("__MACOSX/train/cats/._a.png", b"junk")
        zf.writestr(".DS_Store", b"junk")
        zf.writestr("train/cats/.hidden", b"junk")
        zf.writestr("train/.git/config", b"junk")
        zf.writestr("test\\dogs\\d.png", b"dog2")  # written by a non-conforming Windows tool
    assert safe_extract_zip(zip_path, out) == out
    assert files_under(out) == {"train/cats/a.png", "train/dogs/b.png", "test/cats/c.png", "test/dogs/d.png"}
    assert (out / "train/cats/a.png").read_bytes() == b"cat"
    assert [p.name for p in out.parent.iterdir()] == ["dataset"]


def test_existing_empty_dest_is_fine_but_non_empty_is_refused(tmp_path: Path, out: Path) -> None:
    zip_path = make_zip(tmp_path / "ok.zip", {"a/x.txt": b"1"})
    out.mkdir()
    safe_extract_zip(zip_path, out)
    assert files_under(out) == {"a/x.txt"}
    with pytest.raises(PlaygroundError, match="already exists"):
        safe_extract_zip(zip_path, out)


@pytest.mark.parametrize(
    "member",
    ["../evil.txt", "cats/../../evil.txt", "..\\evil.txt", "/tmp/evil.txt", "C:/evil.txt", "C:\\evil.txt"],
)
def test_members_escaping_dest_are_refused(tmp_path: Path, out: Path, member: str) -> None:
    zip_path = make_zip(tmp_path / "slip.zip", {"cats/ok.png": b"ok", member: b"pwned"})
    assert member in zipfile.ZipFile(zip_path).namelist()  # zipfile kept the hostile name
    assert_refused(zip_path, out, "path" if member.startswith(("/", "C")) else "outside")
    assert not (out.parent / "evil.txt").exists() and not (tmp_path / "evil.txt").exists()
    assert not Path("/tmp/evil.txt").exists() or Path("/tmp/evil.txt").read_bytes() != b"pwned"


def test_symlink_member_is_refused(tmp_path: Path, out: Path) -> None:
    zip_path = tmp_path / "link.zip"
    with zipfile.ZipFile(zip_path, "w") as zf:
        zf.writestr("cats/a.png", b"ok")
        link = zipfile.ZipInfo("cats/passwd")
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(link, "/etc/passwd")
    assert_refused(zip_path, out, "symbolic link")


def test_declared_size_over_limit_is_refused(tmp_path: Path, out: Path) -> None:
    zip_path = make_zip(tmp_path / "big.zip", {"zeros.bin": bytes(3 * MB)})
    assert_refused(zip_path, out, "more than 1 mb", max_bytes=1 * MB)


def test_high_compression_ratio_is_refused(tmp_path: Path, out: Path) -> None:
    zip_path = make_zip(tmp_path / "bomb.zip", {"zeros.bin": bytes(3 * MB)})
    assert_refused(zip_path, out, "zip bomb")


def test_small_highly_compressible_files_are_allowed(tmp_path: Path, out: Path) -> None:
    # A flat-colour BMP compresses far beyond MAX_RATIO yet is a normal dataset file.
    zip_path = make_zip(tmp_path / "flat.zip", {"white/a.bmp": b"\xff" * 150_000})
    safe_extract_zip(zip_path, out)
    assert (out / "white/a.bmp").stat().st_size == 150_000


def test_too_many_files_is_refused(tmp_path: Path, out: Path) -> None:
    zip_path = make_zip(tmp_path / "many.zip", {f"c/{i}.png": b"x" for i in range(3)})
    assert_refused(zip_path, out, "more than 2 files", max_files=2)


def test_lying_declared_size_is_refused(tmp_path: Path, out: Path) -> None:
    zip_path = make_zip(tmp_path / "liar.zip", {"zeros.bin": bytes(3 * MB)})
    data = bytearray(zip_path.read_bytes())
    # Rewrite the uncompressed size in the local header (offset 22) and the central
    # directory entry (offset 24) to claim 1000 bytes.
    for signature, offset in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):
        start = data.index(signature)
        data[start + offset : start + offset + 4] = (1000).to_bytes(4, "little")
    zip_path.write_bytes(bytes(data))
    assert zipfile.ZipFile(zip_path).infolist()[0].file_size == 1000
    assert_refused(zip_path, out, max_bytes=1 * MB)


def test_byte_limit_is_enforced_while_streaming(tmp_path: Path, out: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    zip_path = make_zip(tmp_path / "stream.zip", {"a.bin": bytes(MB), "b.bin": bytes(MB)}, compression=zipfile.ZIP_STORED)

    def trusting_plan(zf: zipfile.ZipFile, *args: object) -> list[tuple[zipfile.ZipInfo, tuple[str, ...]]]:
        return [(info, (info.filename,)) for info in zf.infolist()]  # as if the sizes had lied

    monkeypatch.setattr(archive, "_plan", trusting_plan)
    assert_refused(zip_path, out, "more than", max_bytes=MB + MB // 2)


def test_password_protected_zip_is_refused(tmp_path: Path, out: Path) -> None:
    zip_path = make_zip(tmp_path / "secret.zip", {"a.png": b"x"})
    data = bytearray(zip_path.read_bytes())
    # zipfile cannot write encrypted members, so set the "encrypted" flag bit by hand in
    # the local header (offset 6) and the central directory entry (offset 8).
    for signature, offset in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        data[data.index(signature) + offset] |= 0x1
    zip_path.write_bytes(bytes(data))
    assert zipfile.ZipFile(zip_path).infolist()[0].flag_bits & 0x1
    assert_refused(zip_path, out, "password")


def test_zip_of_only_junk_is_refused(tmp_path: Path, out: Path) -> None:
    zip_path = make_zip(tmp_path / "junk.zip", {"__MACOSX/._x": b"", ".DS_Store": b""})
    assert_refused(zip_path, out, "no files")


@pytest.mark.parametrize("content", [b"", b"just some text, not a zip\n", b"PK\x03\x04" + b"\x00" * 40])
def test_non_zip_is_refused(tmp_path: Path, out: Path, content: bytes) -> None:
    path = tmp_path / "data.zip"
    path.write_bytes(content)
    assert_refused(path, out, "not a zip")


def test_missing_zip_is_refused(tmp_path: Path, out: Path) -> None:
    assert_refused(tmp_path / "nowhere.zip", out, "does not exist")


def test_huge_entry_count_is_refused_before_parsing(tmp_path: Path, out: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    zip_path = tmp_path / "swarm.zip"
    with zipfile.ZipFile(zip_path, "w", zipfile.ZIP_STORED) as zf:
        for i in range(10_001):
            zf.writestr(f"{i}", b"")

    def no_parsing(*args: object, **kwargs: object) -> None:
        raise AssertionError("the central directory should not have been parsed")

    monkeypatch.setattr(archive.zipfile, "ZipFile", no_parsing)
    assert_refused(zip_path, out, "more than 0 files", max_files=0)
