"""Run a log tool by name without PATH: `python -m mailyard.logtools TOOL [ARGS...]`."""

import sys

from mailyard.logtools.cli import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:], via_module=True))
