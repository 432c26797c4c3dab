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


def test_the_readme_keeps_lab_notes_in_docs():
    text = (ROOT / "README.md").read_text()
    for command in ("pip install -r requirements.txt && streamlit run app.py",
                    "pip install -r requirements-dev.txt && python -m pytest"):
        assert command in text
    assert "--index-url https://download.pytorch.org/whl/cpu" in text  # the CPU-only install
    for lab_note in ("| fault | outcome |", "| outcome | architectures | detail |", "## Measured figures"):
        assert lab_note not in text
    for doc in ("measurements.md", "reliability.md", "hosting.md", "conventions.md", "dashboard.md", "cli.md"):
        assert f"docs/{doc}" in text and (ROOT / "docs" / doc).is_file()


def test_the_readme_layout_names_every_package_and_top_folder_and_nothing_else():
    text = (ROOT / "README.md").read_text()
    block = text[text.index("## Layout"):].split("```")[1]
    named = {line.split()[0].rstrip("/") for line in block.splitlines() if line.strip() and not line.startswith(" " * 10)}
    packages = {p.parent.name for p in (ROOT / "residual_core").glob("*/__init__.py")}
    unlisted = {"README.md", "pytest.ini", "requirements.txt", "requirements-dev.txt", "out", "__pycache__"}
    top = {p.name for p in ROOT.iterdir() if not p.name.startswith(".") and p.name not in unlisted}
    assert named == packages | top, (named ^ (packages | top))  # every package and folder has its line, and no more
