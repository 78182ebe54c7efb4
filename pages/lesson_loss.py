import pandas as pd
import streamlit as st

from core.lessons import cross_entropy
from studio import lessons
from studio.lesson_charts import first_losses_chart

first_steps = st.cache_data(show_spinner="Training a fresh network for a few steps…")(cross_entropy.first_steps)


lessons.header("loss")
st.markdown(
    "A classifier's last layer gives one number per class, the **logits**: any real numbers. Softmax turns them into "
    "probabilities, e^z / Σ e^z, and **cross-entropy** is minus the log of the probability the model gives the right "
    "class: 0 for a certain, right answer, large for a confident wrong one. Move the logits of a 3-class model."
)
cols = st.columns(4)
logits = [col.slider(f"logit z{i}", -5.0, 5.0, value, 0.1, key=f"logit{i}") for i, (col, value) in enumerate(zip(cols, (2.0, 1.0, 0.1)))]
target = cols[3].radio("right class", [0, 1, 2], horizontal=True, key="loss_target")
r = cross_entropy.by_hand(logits, target)

hand_col, torch_col = st.columns(2, gap="large")
with hand_col:
    st.markdown("##### By hand")
    st.dataframe(
        pd.DataFrame({"class": [0, 1, 2], "logit z": r.logits, "e^z": r.exps, "softmax: e^z / Σ": r.probs}).style.format(precision=4),
        hide_index=True,
    )
    st.latex(rf"-\ln p_{{{target}}} = -\ln {r.probs[target]:.4f} = {r.by_hand:.4f}")
with torch_col:
    st.markdown("##### By PyTorch")
    st.code(
        f"logits = torch.tensor([[{', '.join(f'{v:g}' for v in r.logits)}]])  # shape [1, 3]: no softmax applied\n"
        f"loss = nn.CrossEntropyLoss()(logits, torch.tensor([{target}]))\n"
        f"print(loss.item())  # {r.torch_loss:.4f}",
        language="python",
        wrap_lines=True,
    )
    st.success(f"The same number: {r.torch_loss:.4f}. CrossEntropyLoss applies log-softmax itself.", icon=":material/check_circle:")

st.subheader("So no Softmax layer before it")
st.markdown(
    f"Put `nn.Softmax()` at the end of the model and the loss applies softmax **twice**: the probabilities become the "
    f"logits. Here that turns {r.torch_loss:.4f} into **{r.softmax_first:.4f}**. Worse, it can never get low: "
    f"probabilities lie in [0, 1], so even a perfect, certain answer [1, 0, 0] costs {r.softmax_first_floor:.4f}, and "
    "the gradients that should push a confident model further are squashed. Keep the model's output raw; apply "
    "softmax only when you want to *read* probabilities (the Predict page does)."
)

with lessons.task_box(
    "loss.uniform",
    "A fresh, untrained network knows nothing: roughly, it gives every class the same probability. What loss does "
    "that uniform guess have with **10 classes**?",
):
    uniform = st.number_input("Your prediction (three decimals)", value=None, step=0.001, format="%.3f", key="uniform_guess", width=260)
    verdict = lessons.check("loss.uniform", lambda: cross_entropy.check_uniform(uniform, 10), uniform)
if verdict is not None and verdict.ok:
    run = first_steps()
    st.markdown(
        f"Here is a real run: a fresh tiny CNN's first {len(run.losses)} training steps on the ten shapes classes. It "
        f"starts near ln 10 = {run.uniform:.3f} (a bit above: its first outputs are not exactly equal), then learns."
    )
    st.plotly_chart(first_losses_chart(run.losses, run.uniform), key="first_losses")

lessons.next_lesson("loss")
