import streamlit as st

from studio import predict_view as pv
from studio.state import through_navigation

through_navigation()  # a direct first visit to /<page> must still get the app's navigation

st.title("Predict")
st.caption(
    "Show a trained model your own pictures. It sees them exactly as it saw its training images: "
    "resized, centre-cropped and normalized the same way, with no randomness."
)
predictor = pv.choose_model()
if predictor is not None:
    files, k = pv.choose_images(predictor)
    pv.show_predictions(predictor, files, k)
