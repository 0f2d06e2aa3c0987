"""`python -m synthgap_tui.cli`."""

import sys

from synthgap_tui.cli import main

sys.exit(main())
