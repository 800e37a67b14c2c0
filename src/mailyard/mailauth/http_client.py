"""httpx without its command-line tool: `from .http_client import httpx`.

httpx's own `__init__` imports its command-line client, `httpx._main`, whenever that tool's
dependencies are installed, and here they are (typer, aiospamc's command line, brings rich,
Pygments and click). That costs the send service about 3.7 MiB for a tool no service runs
(issue 20). The module is marked absent before httpx is first imported, which is how httpx
sees a node without the tool's dependencies: `httpx.main` is then its stub that says they are
missing. Nothing else of httpx changes. Where httpx was imported before (a test process, the
CLI), this does nothing.
"""

from __future__ import annotations

import sys

# An entry of None makes `import httpx._main` raise ImportError (the import system's rule).
sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]

import httpx  # noqa: E402 - after the entry above, or httpx loads its command-line tool

__all__ = ["httpx"]
