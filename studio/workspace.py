"""Shared mode in the browser: this session's workspace, the operator, and what each may see.

The workspace code lives in the page address (`?ws=k7qm-3xpa`), so a reload, a bookmark
or the same address on another computer comes back to the same runs; it is put back into
the address on every page, since switching pages drops query parameters. The operator
opens any page once with `?operator=TOKEN` (PLAYGROUND_OPERATOR_TOKEN): the token is
checked, kept in this browser session only, and taken out of the address bar.
Nothing here shows when the studio is not shared.
"""

from __future__ import annotations

from collections.abc import Iterable

import pandas as pd
import streamlit as st

from core.serving import shared
from core.serving.runs import RunInfo


def settings() -> shared.Settings:
    return shared.Settings.load()


def upload_cap_mb() -> int | None:
    """The per-file upload limit in shared mode (None: Streamlit's server.maxUploadSize, as on your own machine)."""
    limits = settings()
    return limits.max_upload_mb if limits.shared else None


def current() -> str | None:
    """This browser's workspace code, or None when the studio is not shared."""
    if not settings().shared:
        return None
    code = shared.clean_workspace_id(st.query_params.get("ws")) or st.session_state.get("workspace") or shared.new_workspace_id()
    st.session_state["workspace"] = code
    if st.query_params.get("ws") != code:
        st.query_params["ws"] = code
    return code


def is_operator() -> bool:
    token = st.query_params.get("operator")
    if token is not None:
        if shared.operator_token_ok(token):
            st.session_state["operator"] = True
        del st.query_params["operator"]  # out of the address bar, bookmarks and projected screens
    return bool(st.session_state.get("operator"))


def visible(infos: Iterable[RunInfo]) -> list[RunInfo]:
    """The runs this session may see: all of them unless the studio is shared and this is not the operator."""
    code = current()
    if code is None or is_operator():
        return list(infos)
    return [r for r in infos if r.workspace == code]


def _open_other() -> None:
    code = shared.clean_workspace_id(st.session_state.get("ws_other"))
    if code is None:
        st.session_state["ws_other_error"] = True
        return
    st.session_state.pop("ws_other_error", None)
    st.session_state["workspace"] = code
    st.query_params["ws"] = code
    for key in ("watch", "predict_pick", "_live_fig", "_tails"):  # what this session showed belongs to the old one
        st.session_state.pop(key, None)


def sidebar(mine: list[RunInfo]) -> None:
    """The workspace box: its code (to come back), what it uses of its quota, and a way to open another."""
    code = current()
    if code is None:
        return
    limits = settings()
    with st.sidebar.container(border=True):
        st.markdown(f":material/folder_shared: Workspace **`{code}`**")
        st.caption(
            "Your runs are kept under this code. Bookmark this page (the code is in its address) "
            "or write the code down to come back to them."
        )
        used = shared.usage(r for r in mine if r.workspace == code)
        st.caption(used.describe(limits))
        with st.popover("Open another…", icon=":material/login:", help="Type the code of a workspace you used before."):
            st.text_input("Workspace code", key="ws_other", placeholder="e.g. k7qm-3xpa", on_change=_open_other)
            if st.session_state.get("ws_other_error"):
                st.error("That is not a workspace code: 3-40 letters, digits and dashes.")
        if is_operator():
            st.caption(":material/admin_panel_settings: Operator: you see every workspace's runs.")


def operator_panel(every: list[RunInfo], spots: dict) -> None:
    """For the operator on the Runs page: the whole queue and what each workspace uses."""
    if current() is None or not is_operator():
        return
    st.subheader("Class (operator view)")
    limits = settings()
    waiting = sorted(((spots[r.run_id], r) for r in every if r.run_id in spots), key=lambda p: (p[0].pool, p[0].position))
    training = [r for r in every if r.status == "running"]
    st.markdown(f"**{len(training)}** training · **{len(waiting)}** queued · at most {limits.runs_per_device} per device")
    if training or waiting:
        st.dataframe(
            pd.DataFrame(
                [{"run": r.run_id, "workspace": r.workspace or "–", "status": "training", "place": "", "starts in": ""} for r in training]
                + [
                    {
                        "run": r.run_id,
                        "workspace": r.workspace or "–",
                        "status": "queued",
                        "place": f"{s.position} ({s.pool})",
                        "starts in": "?" if s.eta_s is None else f"{s.eta_s / 60:.0f} min",
                    }
                    for s, r in waiting
                ]
            ),
            hide_index=True,
        )
    by_workspace: dict[str, list[RunInfo]] = {}
    for r in every:
        by_workspace.setdefault(r.workspace or "(none: started outside shared mode)", []).append(r)
    rows = []
    for code, infos in sorted(by_workspace.items()):
        used = shared.usage(infos)
        rows.append({"workspace": code, "runs": used.runs, "queued or training": used.active, "MB": round(used.bytes / 1e6, 1)})
    st.dataframe(pd.DataFrame(rows), hide_index=True)
    st.caption(
        f"Limits per workspace: {limits.max_runs} runs, {limits.max_disk_mb:,} MB, {limits.max_active} queued or "
        "training at once. As operator you can stop, resume or delete any run on the Train and Runs pages."
    )
