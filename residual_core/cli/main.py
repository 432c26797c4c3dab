"""Command line: ``python -m residual_core {verify,precompute,specialize,align,geometry,describe,search,maps,scorecard,
shortcuts,datasets,models,bench,textbank}``.

Commands that measure something print one JSON object on their last line. ``precompute`` also runs under
``torchrun --nproc-per-node N -m residual_core precompute …``: the ranks share the shards.
"""

import os
import sys

from residual_core.cli import analysis, bench, build, listing, maps, scorecard, shortcuts, words
from residual_core.cli.args import Parser

# each command family is a module of cli/ with one ``register(sub)``; shared options live in args.py
FAMILIES = (build, analysis, words, maps, scorecard, shortcuts, listing, bench)  # the order of the commands in --help


def build_parser() -> Parser:
    parser = Parser(prog="python -m residual_core", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for family in FAMILIES:
        family.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as done:  # --help (0) or a refused argument (2, its one line already printed)
        return done.code if isinstance(done.code, int) else 2
    try:
        return args.func(args)
    except BrokenPipeError:  # piped into head or less and closed early: nothing more to say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        print("error: interrupted; run the same command again to resume from the finished shards", file=sys.stderr)
        return 130
    except Exception as err:  # one line, never a traceback, unless RESIDUAL_DEBUG=1 asks for it (any error)
        if os.environ.get("RESIDUAL_DEBUG"):
            raise
        if _is_user_error(err):
            print(f"error: {_one_line(err)}", file=sys.stderr)
        else:
            print(f"error: unexpected {type(err).__name__}: {_one_line(err)} (rerun with RESIDUAL_DEBUG=1 for the "
                  "traceback, and please report it)", file=sys.stderr)
        return 2


# Errors that mean "bad input, here is what to do", by the module that defines them. Only modules this run
# imported are asked: an error class whose module was never loaded cannot have been raised (and listing
# models or datasets must not import torch just to name them).
USER_ERRORS = {"residual_core.build.store": ("CacheError",), "residual_core.data.sources": ("DatasetUnavailableError",),
               "residual_core.engine.families.base": ("ModelLoadError", "UnsupportedModelError")}


def _is_user_error(err: Exception) -> bool:
    kinds = [ValueError, FileNotFoundError]
    for module, names in USER_ERRORS.items():
        if module in sys.modules:
            kinds += [getattr(sys.modules[module], name) for name in names]
    return isinstance(err, tuple(kinds))


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split())[:500]


if __name__ == "__main__":
    sys.exit(main())
