"""``python -m nsdist``: the same as the ``nsdist`` command."""

import sys

from .cli import main

sys.exit(main())
