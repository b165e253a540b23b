"""``python -m skdirection``: the same as the ``skdirection`` command."""

import sys

from ._cli import main

sys.exit(main())
