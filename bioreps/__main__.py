"""``python -m bioreps`` is the same as the ``bioreps`` console script."""

import sys

from .cli import main

sys.exit(main())
