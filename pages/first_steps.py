import time

import streamlit as st

from core import linreg
from studio.charts import loss_figure, regression_figure
from studio.state import through_navigation
from studio.widgets import guard

through_navigation()  # a direct first visit to /<page> must still get the app's navigation

st.title("First steps: teach a model a straight line")
st.markdown(
    "Before images and convolutions, the whole idea of training fits on one screen. The data follow "
    "**y = 2x + 3** plus noise. The model has just **two parameters**, `w` and `b`, and starts from random "
    "values. Each step it measures how wrong it is (the **MSE loss**), asks PyTorch for the gradients, and "
    "**SGD** nudges `w` and `b` downhill. Press **Train** and watch them walk to 2 and 3."
)

c1, c2, c3, c4, c5 = st.columns([3, 3, 3, 2, 4])
lr = c1.select_slider("Learning rate", [0.001, 0.003, 0.01, 0.03, 0.05, 0.1, 0.3, 0.5, 0.9, 1.1], value=0.05,
                      help="How big each nudge is. Too small: slow. Too big (0.9 and up here): w and b overshoot "
                           "and the loss explodes.")
steps = c2.slider("Steps", 10, 400, 100, step=10)
noise = c3.slider("Noise", 0.0, 2.0, 0.5, step=0.1, help="Standard deviation of the noise added to y.")
seed = c4.number_input("Seed", 0, 9999, 0, help="Changes the data and the random starting w and b.")
speed = c5.segmented_control("Animation", ["slow", "normal", "instant"], default="normal",
                             help="Only how fast the page animates; the training is the same.")

code_col, live_col = st.columns([1, 1], gap="large")
with code_col:
    st.markdown("##### The PyTorch that does it")
    st.code(linreg.lesson_code(lr, steps, noise), language="python", wrap_lines=True)

with live_col:
    train_clicked = st.button("Train", icon=":material/play_arrow:", type="primary")
    metrics = st.empty()
    line_slot, loss_slot = st.empty(), st.empty()
    with guard():
        x, y = linreg.make_data(n=100, noise=noise, seed=int(seed))
        best = linreg.least_squares(x, y)
        xs, ys = x.squeeze(1).tolist(), y.squeeze(1).tolist()
        key = (lr, steps, noise, int(seed))

        def draw(history: list[linreg.Step], frame: str) -> None:
            last = history[-1]
            with metrics.container():
                m1, m2, m3, m4 = st.columns(4)
                m1.metric(f"step (of {steps})", last.step)
                m2.metric("w (→ 2)", f"{last.w:.3f}")
                m3.metric("b (→ 3)", f"{last.b:.3f}")
                m4.metric("loss", f"{last.loss:.3g}")
            line_slot.plotly_chart(regression_figure(xs, ys, last.w, last.b, best), key=f"line-{frame}")
            loss_slot.plotly_chart(loss_figure([h.step for h in history], [h.loss for h in history], steps),
                                   key=f"loss-{frame}")

        if train_clicked:
            history: list[linreg.Step] = []
            frames, seconds = {"slow": (80, 8.0), "normal": (30, 3.0), "instant": (1, 0.0)}[speed or "normal"]
            every = max(1, steps // frames)
            try:
                for point in linreg.fit(x, y, lr=lr, steps=steps, seed=int(seed)):
                    history.append(point)
                    if point.step % every == 0 or point.step == steps:
                        draw(history, str(point.step))
                        time.sleep(seconds / frames)
            finally:
                st.session_state["linreg"] = (key, history)
            if history[-1].loss > history[0].loss:
                st.warning(f"The loss went up instead of down: with lr = {lr:g} each step overshoots. Try a smaller "
                           "learning rate.")
        else:
            saved_key, history = st.session_state.get("linreg", (None, []))
            if saved_key != key or not history:
                history = [next(linreg.fit(x, y, lr=lr, steps=steps, seed=int(seed)))]
            draw(history, "still")
        st.caption(f"Dashed blue: the best line any (w, b) can reach on this noisy data, found in one go by least "
                   f"squares: w = {best[0]:.3f}, b = {best[1]:.3f}. Gradient descent gets there step by step — "
                   "the same loop trains every network on the other pages.")
