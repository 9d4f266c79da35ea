"""``python -m fedchain.cli``: the same as the ``fedchain`` console script."""

import sys

from fedchain.cli import main

sys.exit(main())
