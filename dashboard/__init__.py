"""Streamlit-side helpers of the dashboard: the only place besides app.py that imports streamlit.

Its pages are in dashboard/pages/."""
