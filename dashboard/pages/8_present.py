"""Present: play a tour full-screen. Next: → / Page Down / Space; previous: ← / Page Up (a clicker sends these)."""

import html

import streamlit as st

from dashboard import slides, theme, tours
from dashboard.state import get_offer, lookup_cache, plain

ss = st.session_state
offer = get_offer()
query = st.query_params.to_dict()
source = "link" if "tour_data" in query else query.get("tour", "demo")
if ss.get("_tour_source") != source or "tour" not in ss:
    try:
        if "tour_data" in query:
            ss.tour, notices = tours.decode(query["tour_data"], offer)
        elif source == "draft" and ss.get("tour_draft"):
            ss.tour, notices = ss.tour_draft, ()
        else:
            ss.tour, notices = tours.load_shipped(source, offer)
    except ValueError as err:
        st.warning(plain(f"{err}; playing the demo tour instead"))
        ss.tour, notices = tours.load_shipped("demo", offer)
    for notice in notices:
        st.warning(plain(notice))
    ss._tour_source = source
    ss.present_step = tours.step_index(query.get("step"), len(ss.tour.steps))
tour: tours.Tour = ss.tour
n = len(tour.steps)


def move(by: int) -> None:
    ss.present_step = max(0, min(n - 1, ss.present_step + by))


theme.presenting()
back, title, forward = st.columns([1, 8, 1], vertical_alignment="center")
back.button("◀", key="prev", on_click=move, args=(-1,), shortcut="Left", help="previous (← or Page Up)",
            disabled=ss.present_step == 0)
forward.button("▶", key="next", on_click=move, args=(1,), shortcut="Right", help="next (→, Page Down or Space)",
               disabled=ss.present_step == n - 1)
with st.container(key="clicker_keys"):  # what a presentation clicker sends; hidden, the keys still work
    st.button("next", key="next_pgdn", on_click=move, args=(1,), shortcut="PageDown")
    st.button("next", key="next_space", on_click=move, args=(1,), shortcut="Space")
    st.button("previous", key="prev_pgup", on_click=move, args=(-1,), shortcut="PageUp")
step = tour.steps[ss.present_step]
title.markdown(f"<div class='tour-title'>{html.escape(step.title)}</div>"  # a tour file is untrusted: escaped
               f"<div class='tour-count'>{ss.present_step + 1} / {n} · {html.escape(tour.title)}</div>",
               unsafe_allow_html=True)
slides.render(step, ss.present_step, offer)
if step.notes:
    with st.expander("Speaker notes", expanded=ss.get("show_notes", False)):
        st.markdown(plain(step.notes))
with st.expander("Before the talk", expanded=bool(ss.get("_just_prepared"))):  # open after preparing: its "ready"
    ss._just_prepared = False
    todo = list(dict.fromkeys(what for s in tour.steps for what in slides.missing(s, offer)))
    if todo:
        st.caption(plain(f"Not prepared yet ({len(todo)}): {'; '.join(todo)}. Exit: the Heads map link below."))
    else:
        st.caption("Every step of this tour is ready: its caches are built and its alignment trained. Exit: the "
                   "Heads map link below.")
    if todo and st.button("Prepare everything this tour shows", key="prepare_tour"):
        for tour_step in tour.steps:
            if slides.missing(tour_step, offer):
                slides.prepare(tour_step, offer)
        lookup_cache.clear()
        ss._just_prepared = True  # the rerun shows the panel open, with its "ready" line
        st.rerun()
    st.page_link("dashboard/pages/1_heads_map.py", label="Leave presenter mode")
st.query_params["step"] = str(ss.present_step + 1)  # the link opens this step (tour or tour_data stays)
if "tour_data" not in query:
    st.query_params["tour"] = source
