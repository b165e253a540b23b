"""``python -m skdirection``: the same as the ``skdirection`` command."""

import sys

from .cli import main

sys.exit(main())
