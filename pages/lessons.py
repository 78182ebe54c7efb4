import streamlit as st

from core.lessons import LESSONS
from studio import lessons, workspace
from studio.state import through_navigation

through_navigation()  # a direct first visit to /<page> must still get the app's navigation

st.title(":material/school: Lessons")
st.markdown(
    "The tutorial's chapters, one page each: a few sentences of why, a live piece on a real tensor or model, the "
    "PyTorch code that matches the screen, and a **task the page checks**, with a hint after a wrong try. Each runs "
    "in seconds on a laptop CPU, offline."
)
store = lessons.progress()
passed = store.passed()
done = store.lessons_done()
st.progress(len(done) / len(LESSONS), text=f"{len(done)} of {len(LESSONS)} lessons done")

for row in range(0, len(LESSONS), 2):
    for column, item in zip(st.columns(2), LESSONS[row : row + 2]):
        with column.container(border=True, height="stretch"):
            finished = store.lesson_done(item, passed)
            st.markdown(f"#### {lessons.DONE_ICON if finished else lessons.TODO_ICON} {item.number} · {item.title}")
            st.markdown(item.summary)
            for task in item.tasks:
                mark = ":green[:material/check:] passed" if task.key in passed else ":gray[:material/remove:]"
                st.caption(f"{mark} · {task.title}")
            st.page_link(lessons.PAGES[item.slug][0], label="Open the lesson", icon=":material/arrow_forward:")

where = "this workspace" if workspace.current() else "this browser"
with st.popover("Start over", icon=":material/restart_alt:", help=f"Forget which tasks {where} has passed."):
    st.markdown(f"Forget every passed task of {where}? The lessons stay as they are.")
    if st.button("Forget my progress", type="primary"):
        store.reset()
        st.rerun()
