import pandas as pd
import streamlit as st

from core.lessons import fine_tune
from core.models.inspect import freeze_map
from studio import lessons

freeze_demo = st.cache_resource(show_spinner="Training a tiny net's new head for a few steps…")(fine_tune.freeze_demo)


lessons.header("fine_tuning")
st.markdown(
    "A network trained on ImageNet has learned features (edges, textures, parts) that help with your pictures too. "
    "Fine-tuning keeps them: **freeze** the backbone (`requires_grad = False`: no gradient, no update) and "
    "**replace the head**, the last layer, with a new one for your classes, which is then the only part that learns."
)
demo = freeze_demo()
st.markdown("A learner froze every parameter and asked why nothing trained. On a tiny net, `loss.backward()` says:")
st.code(f"RuntimeError: {demo.all_frozen_error}", language=None, wrap_lines=True)
st.markdown(
    "No parameter wants a gradient, so the loss has nothing to differentiate. With a **new head** after the freezing "
    "(a new layer is trainable when it is made), ten real training steps change only the head, and BatchNorm's "
    "running statistics: buffers, not parameters, which `model.train()` keeps updating (the studio's freeze leaves them "
    "alone too)."
)
st.dataframe(
    pd.DataFrame({"tensor": list(demo.changed), "changed by training": ["yes" if c else "no" for c in demo.changed.values()]}),
    hide_index=True,
    height=240,
)

st.subheader("AlexNet, as torchvision builds it")
with st.expander("print(torchvision.models.alexnet())", icon=":material/code:"):
    st.code(repr(fine_tune.alexnet()), language=None)
st.markdown(
    "It is not quite the 2012 paper's network: torchvision follows Krizhevsky's 2014 *One weird trick* version "
    "(its weights file is `alexnet-owt-…`), a single tower with fewer filters."
)
st.dataframe(pd.DataFrame(fine_tune.PAPER_VS_TORCHVISION, columns=["", "the 2012 paper", "torchvision"]), hide_index=True)

st.subheader("Your turn: train exactly the head")
c1, c2, c3 = st.columns(3)
freeze = c1.radio("Freeze", list(fine_tune.FREEZE), key="ft_freeze")
replace = c2.radio("Replace", list(fine_tune.REPLACE), key="ft_replace")
order = c3.radio("Order", fine_tune.ORDER, key="ft_order")
code_col, map_col = st.columns([1, 1], gap="large")
setup = fine_tune.apply(freeze, replace, order)
with code_col:
    st.code(fine_tune.task_code(freeze, replace, order), language="python", wrap_lines=True)
    if setup.error:
        st.error("The forward pass of a 224×224 picture fails:", icon=":material/error:")
        st.code(setup.error, language=None, wrap_lines=True)
    else:
        st.caption(f"A 224×224 picture gives {setup.output[-1]} class scores.")
with map_col:
    table = freeze_map(setup.model)
    counts = st.column_config.NumberColumn(format="localized")  # 37,752,832: the head's size reads at a glance
    st.dataframe(table[table["params"] > 0], hide_index=True, column_config={"params": counts, "trainable": counts})
lessons.task(
    "fine_tuning.head_only",
    f"Your data has **{fine_tune.CLASSES} classes**. Choose the lines so that **only the new head** trains: "
    "its weight and bias, nothing else.",
    lambda: fine_tune.check_head_only(freeze, replace, order),
    (freeze, replace, order),
)
lessons.next_lesson("fine_tuning")
