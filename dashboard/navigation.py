"""The dashboard's pages, once: app.py builds its navigation from this list, and the tests and tools that open
every page read it too. No streamlit import here."""

from dataclasses import dataclass


@dataclass(frozen=True)
class PageSpec:
    path: str  # the page's file, relative to the repository root
    title: str
    icon: str
    url_path: str  # "" for the default page


PAGES = (
    PageSpec("dashboard/pages/1_heads_map.py", "Heads map", ":material/grid_on:", ""),
    PageSpec("dashboard/pages/2_head_explorer.py", "Head explorer", ":material/search:", "head_explorer"),
    PageSpec("dashboard/pages/3_probe.py", "Probe", ":material/image_search:", "probe"),
    PageSpec("dashboard/pages/4_ablation_lab.py", "Ablation lab", ":material/science:", "ablation_lab"),
    PageSpec("dashboard/pages/5_specialisation.py", "Specialisation", ":material/leaderboard:", "specialisation"),
    PageSpec("dashboard/pages/6_alignment.py", "Alignment", ":material/tune:", "alignment"),
    PageSpec("dashboard/pages/7_compare.py", "Compare", ":material/compare:", "compare"),
    PageSpec("dashboard/pages/9_search.py", "Search", ":material/manage_search:", "search"),
    PageSpec("dashboard/pages/10_scorecard.py", "Scorecard", ":material/fact_check:", "scorecard"),
    PageSpec("dashboard/pages/8_present.py", "Present", ":material/slideshow:", "present"),
)


def page(title: str) -> PageSpec:
    return next(p for p in PAGES if p.title == title)
