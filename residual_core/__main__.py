"""``python -m residual_core …``: the command line (residual_core/cli/)."""

import sys

from residual_core.cli.main import main

if __name__ == "__main__":
    sys.exit(main())
