import streamlit as st

from core.lessons import linreg, regression
from studio import lesson_view, lessons
from studio.charts import regression_chart
from studio.widgets import guard

lessons.header("regression")
st.markdown(
    "Before images and convolutions, the whole idea of training fits on one screen. The data follow "
    "**y = 2x + 3** plus noise. The model has just **two parameters**, `w` and `b`, and starts from random "
    "values. Each step it measures how wrong it is (the **MSE loss**), asks PyTorch for the gradients, and "
    "**SGD** nudges `w` and `b` downhill. Press **Train** and watch them walk to 2 and 3."
)

c1, c2, c3, c4, c5 = st.columns([3, 3, 3, 2, 4])
lr = c1.select_slider(
    "Learning rate",
    [0.001, 0.003, 0.01, 0.03, 0.05, 0.1, 0.3, 0.5, 0.9, 1.1],
    value=0.05,
    help="How big each nudge is. Too small: slow. Too big (0.9 and up here): w and b overshoot and the loss explodes.",
)
steps = c2.slider("Steps", 10, 400, 100, step=10)
noise = c3.slider("Noise", 0.0, 2.0, 0.5, step=0.1, help="Standard deviation of the noise added to y.")
seed = c4.number_input("Seed", 0, 9999, 0, help="Changes the data and the random starting w and b.")
speed = c5.segmented_control(
    "Animation", list(lesson_view.SPEEDS), default="normal", help="Only how fast the page animates; the training is the same."
)
settings = (float(lr), int(steps), round(float(noise), 2), int(seed))

code_col, live_col = st.columns([1, 1], gap="large")
with code_col:
    st.markdown("##### The PyTorch that does it")
    st.code(linreg.lesson_code(*settings), language="python", wrap_lines=True)
    st.caption("Run it and it prints the same w, b and loss as the page: the seed fixes the data and the start.")

with live_col:
    if st.button("Train", icon=":material/play_arrow:", type="primary"):
        lesson_view.start(settings, speed or "normal")
    with guard():
        result = lesson_view.live_panel(settings)
        if lesson_view.finished(settings) and result.diverged:
            st.warning(
                f"{result.error} The charts show every step until then."
                if result.error
                else f"The loss went up instead of down: with lr = {lr:g} each step overshoots. Try a smaller learning rate.",
                icon=":material/trending_up:",
            )
        best = linreg.least_squares(result.x, result.y)
        st.caption(
            f"Dashed blue: the best line any (w, b) can reach on this noisy data, found in one go by least "
            f"squares: w = {best[0]:.3f}, b = {best[1]:.3f}. Gradient descent gets there step by step — "
            "the same loop trains every network on the other pages."
        )

left, right = st.columns(2)
fit = (float(lr), round(float(noise), 2), int(seed))
with left:
    lessons.task(
        "regression.converge",
        f"Choose a **learning rate** above with which `w` and `b` come within {regression.CLOSE} of the best line in "
        f"under {regression.FAST} steps (with the page's noise and seed). Then check it.",
        lambda: regression.check_converges(*fit),
        fit,
    )
with right:
    lessons.task(
        "regression.diverge",
        "Now break it: choose a learning rate with which the loss **grows** instead of shrinking.",
        lambda: regression.check_diverges(*fit),
        fit,
    )

st.subheader("The broadcasting trap")
st.markdown(
    "A learner's fit came out flat whatever he tried. His targets had shape `[1, 30]`; his model's outputs had "
    "another. `nn.MSELoss` does not stop you: it **warns**, then *broadcasts* the two tensors to a common shape and "
    "averages over that. Choose the shapes and see what it compares."
)
a, b = st.columns(2)
output_label = a.selectbox("The model's outputs", list(regression.OUTPUT_SHAPES), key="trap_output")
target_label = b.selectbox("The targets", list(regression.TARGET_SHAPES), index=1, key="trap_target")
out_shape, target_shape = regression.OUTPUT_SHAPES[output_label], regression.TARGET_SHAPES[target_label]
trap = lesson_view.trap(out_shape, target_shape)
w_text, b_text = (f"{round(v, 3) + 0.0:.3f}" for v in (trap.w, trap.b))  # + 0.0: a flat line's w reads 0.000, not -0.000
code_col, chart_col = st.columns([1, 1], gap="large")
with code_col:
    st.code(regression.trap_code(out_shape, target_shape), language="python", wrap_lines=True)
    if trap.warning:
        st.markdown("PyTorch's warning, word for word:")
        st.code(f"UserWarning: {trap.warning}", language=None, wrap_lines=True)
    else:
        st.success("Same shapes: no warning, one output against one target.", icon=":material/check_circle:")
with chart_col:
    data, spec = regression_chart(trap.x, trap.y, trap.w, trap.b, trap.best)
    st.vega_lite_chart(data, spec, key="trap-line")
    if trap.wrong_fit:  # the lesson's point, not the page's error: no red alert box
        st.markdown(
            f":red[:material/error: **A flat line.**] After 300 steps: w = {w_text}, b = {b_text}. MSELoss compared all "
            f"{trap.compared_shape[0]} × {trap.compared_shape[1]} pairs, every output against every target, and the "
            "line closest to all targets at once is their mean. Fix the shapes: `y.view(-1, 1)` or `outputs.squeeze(1)`."
        )
    elif trap.warning:
        st.info(
            f"w = {w_text}, b = {b_text}: right, by luck. {list(out_shape)} against {list(target_shape)} broadcasts "
            f"to {list(trap.compared_shape)}, element by element. The warning is still worth fixing: the same code "
            "with a [30, 1] output fits a flat line.",
            icon=":material/info:",
        )
    else:
        st.caption(f"w = {w_text}, b = {b_text}: the best line.")

lessons.next_lesson("regression")
