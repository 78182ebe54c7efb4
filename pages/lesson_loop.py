import pandas as pd
import streamlit as st

from core.lessons import loop
from studio import lessons
from studio.lesson_charts import gradients_chart

lessons.header("loop")
st.markdown(
    "Every training step is the same five lines: **forward** (the model's outputs), **loss** (how wrong), "
    "**zero_grad** (forget the last step's gradients), **backward** (PyTorch works out d(loss)/d(parameter) for every "
    "parameter and *adds* it to its `.grad`), **step** (the optimizer moves each parameter against its `.grad`). Here "
    "they run on First steps' two-parameter model, with `w`'s gradient shown at each step."
)
zero_grad = st.toggle("call `optimizer.zero_grad()`", value=True, key="loop_zero_grad")
rows = loop.gradient_steps(zero_grad)
code_col, chart_col = st.columns([3, 2], gap="large")
with code_col:
    st.code(
        f"optimizer = torch.optim.SGD(model.parameters(), lr={loop.LR})\n"
        f"for step in range({loop.STEPS}):\n"
        "    outputs = model(x)\n"
        "    loss = loss_fn(outputs, y)\n"
        + ("    optimizer.zero_grad()  # forget old gradients\n" if zero_grad else "    # optimizer.zero_grad()  (removed!)\n")
        + "    loss.backward()        # .grad += new gradient\n"
        "    optimizer.step()       # w -= lr * w.grad",
        language="python",
        wrap_lines=True,
    )
with chart_col:
    st.plotly_chart(gradients_chart(rows), key="grads")
st.dataframe(
    pd.DataFrame(
        {
            "step": [r.step for r in rows],
            "w": [r.w for r in rows],
            "loss": [r.loss for r in rows],
            "this step's own gradient of w": [r.fresh_w for r in rows],
            "w.grad at optimizer.step()": [r.grad_w for r in rows],
        }
    ).style.format(precision=3),
    hide_index=True,
)
with lessons.task_box("loop.accumulate", "Remove `zero_grad` (the switch above) and compare the two gradient columns."):
    answer = st.radio(
        "Without zero_grad, after step 3's `loss.backward()`, `w.grad` holds…",
        list(loop.ANSWERS),
        format_func=loop.ANSWERS.get,
        index=None,
        key="loop_answer",
    )
    lessons.check("loop.accumulate", lambda: loop.check_accumulate(answer, zero_grad), (answer, zero_grad))

st.subheader("`optimizer.zero_grad()` or `model.zero_grad()`?")
st.markdown(
    "The same, when the optimizer was given `model.parameters()`: both clear every parameter's `.grad` (since "
    "PyTorch 2.0 they set it to `None`, which saves memory and a pass over the tensors). They differ when the "
    "optimizer holds only **some** of the model's parameters (another optimizer, or none, looks after the rest), "
    "or **several models'** (a GAN's generator and discriminator in one optimizer). Here the optimizer holds only "
    "the last layer of a two-layer model:"
)
st.dataframe(pd.DataFrame(loop.zero_grad_difference()).rename_axis("parameter").reset_index(), hide_index=True)

st.subheader("How many steps in an epoch?")
st.markdown(
    "An epoch is one pass over the data; one step per batch. A learner counted **313** steps where he expected 781 "
    "for CIFAR-10's 50,000 training pictures in batches of 32: 313 is 10,000 / 32 rounded up, his loop ran over the "
    "**test** loader. `len(loader)` is the number of batches."
)
problem_index = st.session_state.setdefault("steps_problem", 0)
name, images, batch_size, drop_last = loop.PROBLEMS[problem_index]
st.code(
    f"# {name}\nloader = DataLoader(dataset, batch_size={batch_size}, shuffle=True{', drop_last=True' if drop_last else ''})"
    f"  # len(dataset) == {images:,}\nprint(len(loader))",
    language="python",
)
with lessons.task_box("loop.steps", "Predict what `len(loader)` prints. The page builds that DataLoader and compares."):
    steps_answer = st.number_input("len(loader)", min_value=0, value=None, step=1, key=f"steps_answer{problem_index}", width=260)
    verdict = lessons.check(
        "loop.steps", lambda: loop.check_steps(steps_answer, images, batch_size, drop_last), (problem_index, steps_answer)
    )
if verdict is not None and verdict.ok and st.button("Another one", icon=":material/refresh:"):
    st.session_state["steps_problem"] = (problem_index + 1) % len(loop.PROBLEMS)
    st.rerun()
lessons.next_lesson("loop")
