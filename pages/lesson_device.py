import streamlit as st

from core.lessons import device_mix
from studio import lessons

lessons.header("device")
device = device_mix.lesson_device()
st.markdown(
    "A tensor lives on one device: the CPU's memory, or a GPU's. An operation takes tensors from **one** device, so "
    "a model moved to the GPU must get its inputs there too. The classic message, when the pictures stay on the CPU:"
)
real = device_mix.conv_message(device)
st.code(f"RuntimeError: {real or device_mix.CUDA_MESSAGE}", language=None, wrap_lines=True)
if real:
    st.caption(f"PyTorch's own words, just now on this machine's {device.type} device.")
else:
    st.caption(
        "Quoted: this machine has no GPU. Below, the lesson runs on **meta**, PyTorch's device of shapes without "
        "numbers: meta tensors and CPU tensors do not mix either, and PyTorch says so in its own words."
    )

st.markdown("The loop as the learner wrote it, run just now:")
broken = device_mix.program(device=device, marks=True)
st.code(broken, language="python")
outcome = device_mix.run(broken)
st.code(f"RuntimeError: {outcome.error}", language=None, wrap_lines=True)
st.markdown(
    "`model.to(device)` moved the model: a module's `.to` moves its parameters **in place**. A tensor's `.to` "
    "does not: it returns a moved **copy**, and the tensor you had stays where it was."
)

with lessons.task_box("device.to_device", "Choose a line and where it goes. The page runs the loop as shown."):
    left, right = st.columns([3, 2])
    statement = left.selectbox("The line to add", list(device_mix.STATEMENTS), index=None, key="device_statement")
    slot = right.radio("Where", list(device_mix.SLOTS), format_func=lambda s: f"{s}: {device_mix.SLOTS[s]}", index=None, key="device_slot")
    if statement and slot:
        st.code(device_mix.program(statement, slot, device), language="python")
    lessons.check("device.to_device", lambda: device_mix.check_to_device(statement, slot), (statement, slot))
lessons.next_lesson("device")
