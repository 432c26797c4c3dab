"""Streamlit-side helpers of the dashboard (the only place besides app.py and views/ that imports streamlit)."""
