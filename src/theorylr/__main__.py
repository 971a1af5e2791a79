"""``python -m theorylr``: the ``theorylr`` command line (:mod:`theorylr.cli`), for an environment whose scripts
directory is not on ``PATH``."""

from __future__ import annotations

import sys

from theorylr.cli import main

if __name__ == "__main__":
    sys.exit(main())
