import pandas as pd
import streamlit as st

from core.lessons import padding
from studio import lessons

lessons.header("padding")
st.markdown(
    "`nn.Sequential` runs its layers in order, each on the last one's output: a model is a list. The tutorial's "
    "CIFAR-10 *quick* model is three blocks of a 5×5 convolution and a 2×2 max-pool, then two Linear layers. A "
    "convolution slides its kernel over the picture and can only centre it where the whole kernel fits, so each "
    "conv **shrinks** the picture unless you **pad** its border with zeros. The output size is"
)
st.latex(r"\text{out} = \frac{\text{in} + 2p - k}{s} + 1")
st.markdown(
    "with kernel size *k*, stride *s* and padding *p* on each side (PyTorch rounds the division down). The pools "
    "halve the picture on purpose: 32 → 16 → 8 → 4, and the first Linear layer is made for 64 channels × 4 × 4. "
    "Choose the paddings and run a real 1×3×32×32 tensor through the real model."
)

cols = st.columns(3)
paddings = tuple(
    int(col.number_input(f"padding of model[{index}]", 0, 6, 0, key=f"pad{index}", help="Zeros added on each side."))
    for col, index in zip(cols, (0, 2, 4))
)
code_col, table_col = st.columns([2, 3], gap="large")
with code_col:
    st.code(
        "model = nn.Sequential(\n"
        f"    nn.Conv2d(3, 32, 5, padding={paddings[0]}),\n    nn.MaxPool2d(2),\n"
        f"    nn.Conv2d(32, 32, 5, padding={paddings[1]}),\n    nn.MaxPool2d(2),\n"
        f"    nn.Conv2d(32, 64, 5, padding={paddings[2]}),\n    nn.MaxPool2d(2),\n"
        "    nn.Flatten(),\n    nn.Linear(64 * 4 * 4, 64),\n    nn.Linear(64, 10),\n)\n"
        "x = torch.zeros(1, 3, 32, 32)\nfor i, layer in enumerate(model):\n    x = layer(x)\n    print(i, tuple(x.shape))",
        language="python",
    )
trace = padding.trace(paddings)
with table_col:
    st.dataframe(
        pd.DataFrame(
            [
                {
                    "layer": f"model[{r.index}]",
                    "type": r.layer.split("(")[0],
                    "input": " × ".join(map(str, r.input[1:])),
                    "output": " × ".join(map(str, r.output[1:])) if r.output else "error",
                    "size by the formula": r.formula,
                }
                for r in trace.rows
            ]
        ),
        hide_index=True,
    )
    if trace.error:
        st.error("PyTorch stops here:", icon=":material/error:")
        st.code(trace.error, language=None, wrap_lines=True)
    else:
        st.caption("Every shape above is what the real layer returned; the formula column predicts the convs' sizes.")

lessons.task(
    "padding.same_size",
    "32×32 stays 32×32 through the first conv, 16×16 through the second, 8×8 through the third: set the three paddings above, then check.",
    lambda: padding.check_same_size(paddings),
    paddings,
)
lessons.next_lesson("padding")
