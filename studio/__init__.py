"""UI helpers for the Streamlit pages: charts, shared widgets, session state.

Pages stay thin (widgets and layout); anything that is not about drawing lives in `core`.
"""
