"""``python -m CandleThrob``: the ``candlethrob`` command."""

import sys

from CandleThrob.cli import main

sys.exit(main())
