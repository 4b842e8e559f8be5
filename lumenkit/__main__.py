"""``python -m lumenkit`` runs the command-line interface."""

import sys

from lumenkit.cli import main

sys.exit(main())
