"""``python -m taskiq_fleet``: the ``fleet`` command."""

import sys

from taskiq_fleet.cli import main

sys.exit(main())
