"""``datasets``, ``models`` and ``textbank``: what is registered, and the shipped bank rewritten (no torch to list)."""

import argparse
import json

from residual_core.cli import tables
from residual_core.cli.args import cache_dir_option


def cmd_datasets(args: argparse.Namespace) -> int:
    from residual_core.data.datasets import list_datasets

    rows = list_datasets()
    print(tables.table(["dataset", "classes", "where", "about"],
                       [[r["name"], r["classes"], "offline" if r["offline"] else "needs download", r["about"]]
                        for r in rows]))
    print(json.dumps(rows))
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from residual_core.build.registry import open_clip_tags
    from residual_core.engine.catalogue import list_models

    rows = list_models(open_clip_tags(args.cache_dir))
    flags = {"hub": "needs network once", "file": "file missing"}
    print(tables.table(["name", "spec", "where", "about"],
                       [[r["name"], r["spec"], "offline" if r["offline"] else flags[r["source"]], r["about"]]
                        for r in rows]))
    print("Any open_clip ARCH:TAG (open_clip.list_pretrained()) or ARCH:/path/to/checkpoint also works.")
    print(json.dumps(rows))
    return 0


def cmd_textbank(args: argparse.Namespace) -> int:
    from residual_core.engine.textbank import write_bank, write_photo_bank

    path = write_photo_bank() if args.photo else write_bank()
    print(json.dumps({"path": str(path), "lines": len(path.read_text().splitlines())}))
    return 0


def register(sub) -> None:
    sub.add_parser("datasets", help="list registered datasets").set_defaults(func=cmd_datasets)
    p = sub.add_parser("models", help="list registered model short names")
    cache_dir_option(p)  # where the snapshot of open_clip's tag registry is kept
    p.set_defaults(func=cmd_models)
    p = sub.add_parser("textbank", help="rewrite assets/text_bank.txt (the demo world's words) or, with --photo, "
                                        "assets/photo_bank.txt (words about photos, the default off the demo world)")
    p.add_argument("--photo", action="store_true", help="write the photo bank (ImageNet's category names, offline)")
    p.set_defaults(func=cmd_textbank)
