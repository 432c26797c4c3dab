"""Recording a tour while exploring (the sidebar's Tour box): each click adds the current view as a step."""

from dataclasses import replace

import streamlit as st

from dashboard import tours
from dashboard.state import get_offer, plain
from residual_core.engine.units import head_label


SLIDE_OF_PAGE = {"": "heads_map", "head_explorer": "head", "ablation_lab": "ablation", "probe": "probe",
                 "alignment": "alignment", "specialisation": "heads_map", "compare": "heads_map", "search": "search"}


def tour_recorder(page) -> None:
    """Record a tour while exploring: each click adds the current view as a step; present, save or load it."""
    ss = st.session_state
    with st.expander(f"Tour ({len(ss.tour_draft.steps)} steps)" if ss.get("tour_draft") else "Tour"):
        if st.button("Add this view", key="tour_add", help="the page, model, dataset, head, PC and ablation now shown"):
            params = dict(st.query_params)  # the view as the last run wrote it to the link
            params.update({"layer": str(ss.layer), "head": str(ss.head), "pc": str(ss.pc), "metric": ss.metric})
            concept = ss.get("concept")
            if page.url_path == "search" and concept and not ss.get("concept_classes"):
                params["query"] = concept["label"]  # a search step replays the concept in words
            step = tours.step_from_view(params, SLIDE_OF_PAGE.get(page.url_path, "heads_map"),
                                        f"{page.title}: {head_label(ss.layer, ss.head)}")
            draft = ss.get("tour_draft") or tours.Tour("My tour", ())
            ss.tour_draft = tours.Tour(draft.title, (draft.steps + (step,))[:tours.MAX_STEPS])
        upload = st.file_uploader("Load a tour (JSON)", type=["json"], key="tour_upload")
        if upload is not None and ss.get("_tour_upload_id") != upload.file_id:
            ss._tour_upload_id = upload.file_id
            try:
                ss.tour_draft, notices = tours.from_json_text(upload.getvalue(), get_offer())
                for notice in notices:
                    st.warning(plain(notice))
            except ValueError as err:
                st.error(plain(f"Could not load the tour: {err}"))
        draft = ss.get("tour_draft")
        if draft and draft.steps:  # the last step's words, typed here: a recorded tour is ready to present
            last, n = draft.steps[-1], len(draft.steps)
            title = st.text_input(f"Step {n}'s title", last.title, max_chars=200, key=f"tour_title_{n}")
            notes = st.text_area(f"Step {n}'s speaker notes", last.notes, max_chars=tours.MAX_TEXT,
                                 key=f"tour_notes_{n}")
            if (title, notes) != (last.title, last.notes):
                draft = ss.tour_draft = replace(draft, steps=draft.steps[:-1] + (replace(last, title=title,
                                                                                          notes=notes),))
        if draft:
            st.markdown(f"[Present it full-screen](./present?tour_data={tours.encode(draft)})")
            st.download_button("Save it (JSON)", draft.to_json(), "tour.json", "application/json")
            if st.button("Clear it", key="tour_clear"):
                ss.tour_draft = None
                st.rerun()
        st.markdown("[Present the demo tour](./present?tour=demo)")
