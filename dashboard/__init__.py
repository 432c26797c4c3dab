"""Streamlit-side helpers of the dashboard (the only place besides app.py that imports streamlit; its pages are in dashboard/pages/)."""
