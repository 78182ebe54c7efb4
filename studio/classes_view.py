"""The Train page's "Your own classes" data source: name classes, add pictures (upload, .zip or camera), see
thumbnails, counts and the train/test split, remove a picture with a click, download the set as a .zip.

The files are core.data.classes' business; this module is only widgets. An uploader or camera is given a fresh key
once its pictures are stored, so it is empty again (ready for the next ones) and nothing is added twice.
"""

from __future__ import annotations

import io
from pathlib import Path

import pandas as pd
import streamlit as st
from PIL import Image

from core.data import classes
from core.errors import PlaygroundError
from studio import workspace
from studio.widgets import guard

NEW = "\0new"  # the "new set" entry of the set picker (no set name can hold a NUL)
THUMB_PX = 72
SHOWN = 12  # thumbnails per class before "Show all"
# What the card's uploader says it takes. It takes any file, though: one it filtered out (an SVG) would only show
# its reason on hover; core.data.images refuses it with a warning that names the file and says what to do.
UPLOAD_KINDS = "JPEG, PNG, WebP, BMP, GIF or TIFF pictures (many at once), or a .zip of them"
ORDER = "classes_order"  # {set: its class names in the order the cards were first shown}: a renamed card stays put
EXAMPLE_CLASSES = ("Class 1", "Class 2")


def root() -> Path:
    return classes.sets_root(workspace.current())


@st.cache_data(max_entries=2000, show_spinner=False)
def _thumbnail(path: str, mtime_ns: int) -> bytes:
    with Image.open(path) as img:
        img = img.convert("RGB")
        side = min(img.size)
        left, top = (img.width - side) // 2, (img.height - side) // 2
        img = img.crop((left, top, left + side, top + side)).resize((THUMB_PX * 2, THUMB_PX * 2))
        buffer = io.BytesIO()
        img.save(buffer, "JPEG", quality=85)
        return buffer.getvalue()


def _bump(key: str) -> int:
    """A new generation for an uploader or camera: a fresh, empty widget."""
    st.session_state[key] = st.session_state.get(key, 0) + 1
    return st.session_state[key]


def _report(added: classes.Added) -> None:
    st.session_state["classes_note"] = (added.summary(), added.refused[:5])


def _store(set_path: Path, class_name: str, files: list[tuple[str, bytes]], counter: str) -> None:
    try:
        _report(classes.add_images(set_path, class_name, files))
    except PlaygroundError as exc:
        st.session_state["classes_note"] = ("", [str(exc)])
    _bump(counter)


def _remove(set_path: Path, class_name: str, file_name: str) -> None:
    try:
        classes.remove_image(set_path, class_name, file_name)
    except PlaygroundError as exc:
        st.session_state["classes_note"] = ("", [str(exc)])


def _new_set_form() -> None:
    st.caption(
        "A set is a folder of classes (e.g. *mug*, *keys*, *phone*) with pictures of each. "
        "It is kept in the data folder, to train again later or download as a .zip."
    )
    with st.form("classes_new", border=False):
        name = st.text_input("Name of the new set", placeholder="e.g. my-desk", key="classes_new_name")
        start = st.file_uploader(
            "Start from a .zip of class folders (optional)",
            type=["zip"],
            key="classes_new_zip",
            max_upload_size=workspace.upload_cap_mb(),
            help="cat/1.jpg, cat/2.jpg, …, dog/1.jpg, … (train/ and test/ folders are merged).",
        )
        if st.form_submit_button("Create set", icon=":material/create_new_folder:", type="primary"):
            with guard():
                if start is None:
                    path = classes.create_set(root(), name)
                    for example in EXAMPLE_CLASSES:
                        classes.add_class(path, example)
                else:
                    path, added = classes.import_zip(root(), name, start.getvalue(), start.name)
                    _report(added)
                st.session_state["classes_pick"] = path.name
                st.rerun()


def _in_shown_order(set_name: str, names: list[str]) -> list[str]:
    """The cards in the order they were first shown in this session (new classes last), not re-sorted by name."""
    shown = st.session_state.setdefault(ORDER, {}).get(set_name, [])
    order = [n for n in shown if n in names] + [n for n in names if n not in shown]
    st.session_state[ORDER][set_name] = order
    return order


def _rename(set_path: Path, old: str, new: str) -> None:
    renamed = classes.rename_class(set_path, old, new).name
    order = st.session_state.get(ORDER, {}).get(set_path.name, [])
    st.session_state[ORDER][set_path.name] = [renamed if n == old else n for n in order]


def _class_card(set_path: Path, class_name: str, pictures: list[Path]) -> None:
    slug = f"{set_path.name}/{class_name}"
    with st.container(border=True):
        head = st.columns([5, 1, 1], vertical_alignment="center")
        head[0].markdown(f"**{class_name}** · {len(pictures)} picture{'s' * (len(pictures) != 1)}")
        # Keyed by the class: an open box belongs to its class, not to a place on the page (after a rename or a
        # delete, no other card's box opens in its place).
        with head[1].popover("", icon=":material/edit:", help="Rename this class", key=f"rename-box-{slug}"):
            new = st.text_input("New name", value=class_name, key=f"rename-{slug}")
            if st.button("Rename", key=f"rename-go-{slug}"):
                with guard():
                    _rename(set_path, class_name, new)
                    st.rerun()
        with head[2].popover("", icon=":material/delete:", help="Delete this class and its pictures", key=f"delete-box-{slug}"):
            st.write(f"Delete **{class_name}** and its {len(pictures)} pictures?")
            if st.button("Delete class", key=f"delete-{slug}", type="primary"):
                with guard():
                    classes.remove_class(set_path, class_name)
                    st.rerun()

        upload_key = f"up-gen-{slug}"
        uploads = st.file_uploader(
            f"Add pictures of {class_name}",
            accept_multiple_files=True,
            key=f"up-{slug}-{st.session_state.get(upload_key, 0)}",
            label_visibility="collapsed",
            max_upload_size=workspace.upload_cap_mb(),
            help=f"{UPLOAD_KINDS}, all of this class.",
        )
        if uploads:
            _store(set_path, class_name, [(u.name, u.getvalue()) for u in uploads], upload_key)
            st.rerun()
        if st.toggle(
            "Camera",
            key=f"cam-on-{slug}",
            help="Take pictures with this computer's camera: each one is "
            "added to this class at once. Vary the angle, distance and background.",
        ):
            camera_key = f"cam-gen-{slug}"
            shot = st.camera_input(f"Take a picture of {class_name}", key=f"cam-{slug}-{st.session_state.get(camera_key, 0)}")
            if shot is not None:
                _store(set_path, class_name, [(f"camera-{class_name}.jpg", shot.getvalue())], camera_key)
                st.rerun()

        show_all = len(pictures) > SHOWN and st.toggle(f"Show all {len(pictures)}", key=f"all-{slug}")
        shown = pictures if show_all else pictures[-SHOWN:]
        with st.container(horizontal=True, gap="small"):  # wraps: as many thumbnails a row as fit
            for path in shown:
                with st.container(horizontal=True, gap=None, width="content"):  # each x right beside its picture
                    st.image(_thumbnail(str(path), path.stat().st_mtime_ns), width=THUMB_PX)
                    st.button(
                        "",
                        icon=":material/close:",
                        key=f"rm-{slug}/{path.name}",
                        help=f"Remove {path.name}",
                        on_click=_remove,
                        args=(set_path, class_name, path.name),
                        type="tertiary",
                    )


def _split_table(set_path: Path) -> tuple[list[dict], str | None]:
    rows = classes.split(set_path)
    if not rows:
        return rows, None
    st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")
    n_train, n_test = sum(r["train"] for r in rows), sum(r["test"] for r in rows)
    st.caption(
        f"**{n_train}** pictures to train on, **{n_test}** to test on: a seeded split of every class "
        "(the test pictures are never trained on)."
    )
    return rows, classes.test_split_warning(n_test)


def data_source() -> str | None:
    """The set picker and editor; returns the set's data SPEC once it can train (two classes with pictures)."""
    sets = classes.list_sets(root())
    picked = st.session_state.get("classes_pick")
    options = sets + [NEW]
    chosen = st.selectbox(
        "Image set",
        options,
        index=options.index(picked) if picked in options else 0,
        format_func=lambda s: "+ New set…" if s == NEW else s,
        key=f"classes_set-{picked}",
    )
    st.session_state["classes_pick"] = chosen
    if chosen == NEW:
        _new_set_form()
        return None
    set_path = root() / chosen

    note = st.session_state.pop("classes_note", None)
    if note:
        summary, refused = note
        if summary:
            st.toast(summary, icon=":material/add_photo_alternate:")
        for message in refused:
            st.warning(message, icon=":material/block:")

    try:
        names = classes.class_names(set_path)
        pictures = {name: classes.images(set_path, name) for name in names}
    except (OSError, PlaygroundError) as exc:
        st.error(f"The set {chosen} cannot be read ({exc}).")
        return None
    for name in _in_shown_order(chosen, names):
        _class_card(set_path, name, pictures[name])
    with st.form(f"add-class-{chosen}", border=False, clear_on_submit=True):
        # A horizontal row, not columns: the button keeps its whole label and the field takes the rest.
        with st.container(horizontal=True, vertical_alignment="bottom"):
            new = st.text_input("New class", placeholder="e.g. keys", key=f"new-class-{chosen}")
            if st.form_submit_button("Add class", icon=":material/add:"):
                with guard():
                    classes.add_class(set_path, new)
                    st.rerun()

    st.markdown("###### Train / test split")
    rows, warning = _split_table(set_path)
    problem = classes.not_ready(set_path)
    if problem:
        st.info(problem, icon=":material/info:")
    elif warning:
        st.warning(warning, icon=":material/warning:")
    with st.container(horizontal=True):
        st.download_button(
            "Download the set (.zip)",
            lambda: classes.export_zip(set_path),
            file_name=f"{chosen}.zip",
            mime="application/zip",
            icon=":material/download:",
            on_click="ignore",
            disabled=not rows,
        )
        with st.popover("Delete set", icon=":material/delete:"):
            st.write(f"Delete the set **{chosen}** and all its pictures? Runs trained on it are kept.")
            if st.button("Delete set", key=f"delete-set-{chosen}", type="primary"):
                with guard():
                    classes.delete_set(root(), chosen)
                    st.session_state.pop("classes_pick", None)
                    st.rerun()
    return None if problem else classes.spec(set_path)
