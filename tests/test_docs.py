"""The README is for a newcomer (what it is, the two commands, the CLI, the API, the layout); lab notes are in docs/."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _links(path: Path) -> list[str]:
    return [link for link in re.findall(r"\]\(([^)#\s]+)", path.read_text()) if not link.startswith("http")]


def test_every_local_link_in_the_readme_and_docs_resolves():
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    broken = [(page.name, link) for page in pages for link in _links(page) if not (page.parent / link).exists()]
    assert broken == []


def test_the_readme_is_short_and_keeps_lab_notes_in_docs():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 350  # it was 792 lines, most of them measurements
    for command in ("pip install -r requirements.txt && streamlit run app.py",
                    "pip install -r requirements-dev.txt && python -m pytest"):
        assert command in text
    assert "--index-url https://download.pytorch.org/whl/cpu" in text  # the CPU-only install
    for lab_note in ("| fault | outcome |", "| outcome | architectures | detail |", "## Measured figures"):
        assert lab_note not in text
    for doc in ("measurements.md", "reliability.md", "hosting.md", "conventions.md", "dashboard.md"):
        assert f"docs/{doc}" in text and (ROOT / "docs" / doc).is_file()
