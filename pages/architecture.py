import streamlit as st

from core.models import inspect as look
from core.models.build import build
from core.models.layers import LAYER_OPTIONS, spec_of
from core.models.presets import PRESETS
from studio import arch
from studio.charts import architecture_figure
from studio.state import through_navigation
from studio.widgets import guard

through_navigation()  # a direct first visit to /<page> must still get the app's navigation

EDITABLE = ["cifar10_quick", "lenet5"]  # presets that are plain stacks of spec layers
FIXED = [name for name in PRESETS if name not in EDITABLE]
inspect_model = st.cache_data(max_entries=12, show_spinner="Building the model…")(arch.inspect_model)

st.title("Architecture")
st.caption(
    "Stack layers, pick an input size, and see every tensor shape, parameter count and the PyTorch code. "
    "Each row of the table is one layer; edit a cell and everything below updates."
)

saved = {f"saved: {a['name']}": a for a in arch.saved_architectures()}
options = EDITABLE + list(saved) + FIXED
labels = {name: f"{PRESETS[name].title} ({name})" for name in PRESETS}
top = st.columns([3, 1, 1])
source = top[0].selectbox(
    "Start from",
    options,
    format_func=lambda o: labels.get(o, o),
    help="Stack presets and saved architectures can be edited; the others are fixed modules.",
)
editable = source not in FIXED
default_side = saved[source]["input_size"] if source in saved else PRESETS[source].input_size if source in PRESETS else 32
side = top[1].number_input(
    "Input size (pixels)", 8, 512, int(default_side), key=f"side-{source}", help="Images are square: 3 x size x size (RGB)."
)
classes = top[2].number_input("Classes", 1, 1000, 10, help="How many outputs the last layer gives.")
if source in PRESETS:
    st.caption(PRESETS[source].description)

result, spec = None, None
if editable:
    if st.session_state.get("arch_source") != source:  # a new starting point resets the editor
        if source in saved:
            start = saved[source]["layers"]
        else:
            start = spec_of(build(source))
            start[-1]["out_features"] = None  # the last Linear follows the number of classes
        st.session_state.update(
            arch_source=source, arch_base=arch.spec_to_table(start), arch_version=st.session_state.get("arch_version", 0) + 1
        )
    number = st.column_config.NumberColumn
    config = {
        "#": number("#", help=arch.COLUMN_HELP["#"], step=0.5, format="%g", width="small"),
        "type": st.column_config.SelectboxColumn("type", options=list(LAYER_OPTIONS), help=arch.COLUMN_HELP["type"]),
        **{
            c: number(c, help=arch.COLUMN_HELP[c], min_value=0 if c == "padding" else 1, step=1, format="%d")
            for c in ("in", "out", "kernel", "stride", "padding", "dilation")
        },
        "p": number("p", help=arch.COLUMN_HELP["p"], min_value=0.0, max_value=0.95, step=0.05, format="%.2f"),
        "bias": st.column_config.CheckboxColumn("bias", help=arch.COLUMN_HELP["bias"]),
    }
    st.markdown("##### Layers (editable)")
    edited = st.data_editor(
        st.session_state["arch_base"],
        num_rows="dynamic",
        hide_index=True,
        column_config=config,
        placeholder="–",
        key=f"arch_editor_{st.session_state['arch_version']}",
    )
    st.caption(
        "Add a row at the bottom; give it a # like 2.5 to put it between layers 2 and 3. "
        "Blank cells use PyTorch's defaults, and a blank **in** is worked out from the layer above; "
        "type a number there to write it yourself (try a wrong Linear in_features). Cells a layer does not use are ignored."
    )
    spec = arch.table_to_spec(edited)
    with guard():
        result = inspect_model(spec, int(classes), int(side))
else:
    freeze = False
    if PRESETS[source].torchvision:
        freeze = st.toggle("Freeze the backbone (fine-tuning: only the new head trains)", value=False)
    with guard():
        result = inspect_model(source, int(classes), int(side), freeze)

if result is not None:
    st.markdown("##### Shapes and sizes")
    if result["error"]:  # the layers above the broken one still show their shapes; the broken row is marked
        st.error(result["error"], icon=":material/warning:")
    else:
        m = st.columns(4)
        m[0].metric("Parameters", look.format_count(result["total"]), help=f"{result['total']:,} numbers the model learns")
        m[1].metric("Trainable", look.format_count(result["trainable_params"]))
        m[2].metric("MACs / image", look.format_count(result["total_macs"]), help="multiply-accumulates for one image")
        m[3].metric("Output", look.shape_str(result["output_shape"]))
    layers = result["layers"].rename(columns={"name": "layer", "output_shape": "output shape", "macs": "MACs"})
    st.dataframe(
        arch.mark_broken(layers, result["broken"]),
        hide_index=True,
        placeholder="–",
        column_config={
            "params": st.column_config.NumberColumn(format="localized"),
            "trainable": None,
            "MACs": st.column_config.NumberColumn(format="localized"),
        },
    )
    st.markdown("##### The stack, with the shape of the tensor after each layer")
    if result["broken"] is not None:
        st.caption(f"Layers 1 to {result['broken'] - 1} fit; layer {result['broken']} and those below it are drawn once it does.")
    if len(result["overview"]):
        st.plotly_chart(architecture_figure(result["overview"], (3, int(side), int(side))), key="arch-diagram")

    tabs = st.tabs(["As PyTorch prints it", "As code to copy"] + (["Freeze map"] if result["freeze_map"] is not None else []))
    tabs[0].code(result["printed"], language="text")
    with tabs[1]:
        if result["code"]:
            if result["code_note"]:
                st.caption(result["code_note"])
            st.code(result["code"], language="python")
        else:
            st.info(result["code_error"])
    if result["freeze_map"] is not None:
        with tabs[2]:
            st.caption(
                f"Trainable {result['trainable_params']:,} of {result['total']:,} parameters "
                f"({result['trainable_params'] / max(result['total'], 1):.1%}). The head is replaced to give "
                f"{int(classes)} outputs and always trains."
            )
            st.dataframe(
                result["freeze_map"],
                hide_index=True,
                column_config={
                    "params": st.column_config.NumberColumn(format="localized"),
                    "trainable": st.column_config.NumberColumn(format="localized"),
                },
            )

    if not result["error"]:  # a model that does not build cannot train
        with st.container(border=True):
            st.markdown("##### Use this architecture for training")
            use_cols = st.columns([3, 2], vertical_alignment="bottom")
            if editable:
                name = use_cols[0].text_input("Save as", value=source.removeprefix("saved: ") if source in saved else f"my-{source}")
            else:
                use_cols[0].markdown(f"The Train page will use **{labels[source]}**" + (" with a frozen backbone." if freeze else "."))
            if use_cols[1].button("Use for training →", type="primary"):
                with guard():
                    if editable:
                        arch.save_architecture(name, spec, int(side))
                        st.session_state["train_choice"] = {"kind": "saved", "name": name.strip()}
                    else:
                        st.session_state["train_choice"] = {"kind": "preset", "name": source, "freeze": freeze}
                    st.switch_page("pages/train.py")

with st.expander("Conv output-size calculator", expanded=False):
    st.latex(r"H_{out} = \left\lfloor \frac{H_{in} + 2p - d\,(k-1) - 1}{s} \right\rfloor + 1")
    c = st.columns(5)
    size = c[0].number_input("input size H", 1, 4096, 32)
    kernel = c[1].number_input("kernel k", 1, 64, 5)
    stride = c[2].number_input("stride s", 1, 16, 1)
    pad = c[3].number_input("padding p", 0, 64, 2)
    dil = c[4].number_input("dilation d", 1, 16, 1)
    with guard():
        st.code(look.explain_conv_output(int(size), int(kernel), int(stride), int(pad), int(dil)), language="text")
    target = st.number_input(
        "Padding solver: which padding gives an output of",
        1,
        4096,
        -(-int(size) // int(stride)),
        help="Defaults to 'same' size (input / stride, rounded up).",
    )
    with guard():
        solved = look.padding_for_size(int(size), int(kernel), int(stride), int(dil), int(target))
        if solved is None:
            st.warning(
                f"No whole-number padding gives {target}: with kernel {kernel} and stride {stride} you would need "
                "half a pixel on each side. Try an odd kernel size."
            )
        else:
            st.success(
                f"padding = {solved} gives {int(size)} → {int(target)} "
                f"(`nn.Conv2d(..., kernel_size={kernel}, stride={stride}, padding={solved})`)."
            )
