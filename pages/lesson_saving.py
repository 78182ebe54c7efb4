import os

import streamlit as st

from core.lessons import saving
from studio import lessons


@st.cache_resource(show_spinner="Training the tiny net for a few steps…")
def both_ways() -> saving.BothWays:
    model, _ = saving.original()
    return saving.both_ways(model)


lessons.header("saving")
st.markdown(
    "The tutorial saves a model two ways. `torch.save(model.state_dict(), path)` writes the **state_dict**: a "
    "dictionary from each parameter's (and buffer's) name to its tensor, nothing else. `torch.save(model, path)` "
    "**pickles the whole model object**: the tensors, and a note of which Python classes to rebuild it from."
)
ways = both_ways()
left, right = st.columns(2, gap="large")
with left:
    st.markdown("##### The state_dict (recommended)")
    st.code(
        "torch.save(model.state_dict(), 'tiny.pt')\n\nmodel = tiny_net(num_classes=3)  # the architecture, in code\n"
        "model.load_state_dict(torch.load('tiny.pt', weights_only=True))\nmodel.eval()",
        language="python",
        wrap_lines=True,
    )
    st.caption(
        f"{ways.state_dict_bytes / 1000:.1f} kB on disk; it holds {len(ways.state_dict_keys)} tensors: "
        + ", ".join(f"`{k}`" for k in ways.state_dict_keys[:6])
        + ", …"
    )
with right:
    st.markdown("##### The whole model (pickle)")
    st.code(
        "torch.save(model, 'whole.pt')\n\n# only a file you trust:\nmodel = torch.load('whole.pt', weights_only=False)",
        language="python",
        wrap_lines=True,
    )
    st.caption(
        f"{ways.whole_model_bytes / 1000:.1f} kB. Loading it needs the class's code importable under the same name, "
        "and `weights_only=False`. With the safe default, PyTorch refuses it:"
    )
    st.code(ways.whole_model_refused, language=None, wrap_lines=True)

st.subheader("Why loading a pickle can run code")
st.markdown(
    "A pickle does not store objects; it stores **instructions to rebuild them**, and an instruction can be *call "
    "this function*. Here is a harmless file that says *call `os.getpid()`*. Loaded with `weights_only=False`:"
)
st.code(f"evil = torch.load('evil.pt', weights_only=False)\nprint(evil['extra'])  # {ways.pickle_ran}", language="python")
st.caption(f"{ways.pickle_ran} is this very process's id (os.getpid() = {os.getpid()}): the file's call ran while it loaded.")
st.markdown(
    "A malicious file names `os.system` and a command instead. With `weights_only=True` (the default since PyTorch "
    "2.6) `torch.load` only rebuilds tensors and plain containers, and refuses the rest:"
)
st.code(ways.pickle_refused, language=None, wrap_lines=True)
st.markdown(
    "So: share and load **state_dicts**, build the architecture in code, and keep `weights_only=True`. The studio "
    "saves its checkpoints that way."
)

with lessons.task_box(
    "saving.reload",
    "`tiny.pt` holds the state_dict of a tiny net trained on 3 classes. Load it into a freshly built model so that it "
    "gives **the same prediction** for three test pictures as the model that was saved.",
):
    c1, c2, c3 = st.columns([3, 4, 2])
    build = c1.selectbox("Build", list(saving.BUILD), index=None, key="save_build")
    load = c2.selectbox("Load", saving.LOAD, index=None, key="save_load")
    mode = c3.selectbox("Then", saving.MODE, index=None, key="save_mode")
    if build and load and mode:
        st.code(saving.task_code(build, load, mode), language="python")
    lessons.check("saving.reload", lambda: saving.check_reload(build, load, mode), (build, load, mode))
lessons.next_lesson("saving")
