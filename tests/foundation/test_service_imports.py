"""What a service's entry module loads, checked in a fresh interpreter (issue 20: idle memory).

Each Python service pays in memory for every module it imports; these are libraries that one
of them once loaded without ever using, each named with the service that must not load it.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

# entry module -> modules that importing it must not load
NOT_LOADED = {
    # send: MTA-STS fetches use httpx, whose __init__ would load its command-line tool
    "mailyard.delivery.service": ["httpx._main", "rich", "pygments", "click",
                                  # reads DKIM keys and accounts, never makes a key
                                  "cryptography"],
    # smtp and submission: TLS contexts at start need only ssl (cryptography reads the names
    # of a hosted domain's own certificate, on a node that has one)
    "mailyard.smtp.service": ["cryptography"],
}

CHILD = r"""
import importlib, json, sys
importlib.import_module(sys.argv[1])
print(json.dumps(sorted(m for m in json.loads(sys.argv[2]) if sys.modules.get(m) is not None)))
"""


@pytest.mark.parametrize("entry", sorted(NOT_LOADED))
def test_a_service_does_not_load_what_it_never_uses(entry: str) -> None:
    done = subprocess.run([sys.executable, "-c", CHILD, entry, json.dumps(NOT_LOADED[entry])],
                          capture_output=True, text=True, timeout=120, cwd="/")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []


def test_httpx_still_works_without_its_command_line_tool() -> None:
    """The stub httpx defines when its tool is absent; the client itself is whole."""
    code = ("from mailyard.mailauth.http_client import httpx; import sys; "
            "print(sys.modules.get('httpx._main') is None, callable(httpx.main), "
            "httpx.AsyncClient.__name__)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, cwd="/")
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["True", "True", "AsyncClient"]
