"""``python -m lumenkit.lab``: the research commands."""

import sys

from lumenkit.lab.cli import main

sys.exit(main())
