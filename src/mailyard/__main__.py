"""`python -m mailyard` runs the mailyard command."""

import sys

from .cli.main import main

sys.exit(main())
