"""A folder dataset's own words: ``classnames.csv`` and ``templates.txt`` beside its class folders.

  classnames.csv   columns ``folder,name``: the class name prompts use for a sub-folder ("n01440764" → "tench");
                   a folder it does not list keeps its cleaned folder name
  templates.txt    one prompt template per line, each with one ``{}`` where the class name goes
                   ("a photo of a {}."); blank lines and ``#`` comments are ignored
Both are untrusted text: read bounded, as UTF-8, and refused in one line naming the file and what to fix.
"""

from pathlib import Path

from residual_core.data.untrusted import csv_rows

CLASSNAMES_FILE, TEMPLATES_FILE = "classnames.csv", "templates.txt"
MAX_TEMPLATES, MAX_CHARS = 200, 300
MAX_TEMPLATE_BYTES = 1 << 20


def folder_classnames(root: Path, folders: tuple[str, ...], cleaned: tuple[str, ...]) -> tuple[str, ...]:
    """The class names of ``folders`` (``cleaned`` where ``classnames.csv`` is absent or silent)."""
    path = root / CLASSNAMES_FILE
    if not path.is_file():
        return cleaned
    rows, _ = csv_rows(path, "class-name file")
    if not rows or not {"folder", "name"} <= set(rows[0]):
        raise ValueError(f"class-name file {path} needs the columns folder,name (one row per class folder)")
    names = {}
    for row in rows:
        folder, name = (row.get("folder") or "").strip(), (row.get("name") or "").strip()
        if folder not in folders:
            raise ValueError(f"class-name file {path} names the folder {folder[:60]!r}, which holds no images here")
        if not name or len(name) > MAX_CHARS or "\x00" in name:
            raise ValueError(f"class-name file {path}: the name for {folder!r} is empty or longer than {MAX_CHARS}")
        names[folder] = name
    return tuple(names.get(f, c) for f, c in zip(folders, cleaned))


def folder_templates(root: Path, default: tuple[str, ...]) -> tuple[str, ...]:
    """The prompt templates of a folder dataset (``default`` without ``templates.txt``)."""
    path = root / TEMPLATES_FILE
    if not path.is_file():
        return default
    with open(path, "rb") as handle:
        raw = handle.read(MAX_TEMPLATE_BYTES + 1)
    if len(raw) > MAX_TEMPLATE_BYTES:
        raise ValueError(f"template file {path} is larger than {MAX_TEMPLATE_BYTES >> 20} MB")
    try:
        lines = raw.decode("utf-8-sig").splitlines()
    except UnicodeDecodeError:
        raise ValueError(f"template file {path} is not UTF-8 text") from None
    templates = [t.strip() for t in lines if t.strip() and not t.strip().startswith("#")]
    if not 1 <= len(templates) <= MAX_TEMPLATES:
        raise ValueError(f"template file {path} holds {len(templates)} templates; give 1 to {MAX_TEMPLATES}, one "
                         "per line")
    for template in templates:
        if template.count("{}") != 1 or template.replace("{}", "").count("{") or \
                template.replace("{}", "").count("}") or len(template) > MAX_CHARS:
            raise ValueError(f"template file {path}: {template[:60]!r} must hold exactly one {{}} (where the class "
                             f"name goes), no other braces, and at most {MAX_CHARS} characters")
    return tuple(templates)
