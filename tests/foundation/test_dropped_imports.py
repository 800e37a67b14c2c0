"""Every module of ours a service reaches is loaded before it drops root (issue 20).

The smtp, submission and send services start as root, bind their ports and then become the
mail owner for good (`services.privileges.drop_privileges`); after that an import may find the
interpreter's files or ours out of reach (a Python under root's 0700 home). Each service's entry
module is started in a subprocess as the service starts: its own imports, what it loads itself
before the drop, then the real drop to the `mailyard` user. As that user the subprocess then
checks that every module of ours the entry reaches in the import graph (function-local imports
included) is already loaded, and imports each of them. A lazy import added on a service's path
and not covered by the preload list fails here, not on a production node.
"""

from __future__ import annotations

import json
import os
import pwd
import subprocess
import sys

import pytest
from test_layers import import_graph

from mailyard.services.privileges import MAIL_USER

# The entry modules of the Python services that drop root, and what each loads itself before
# the drop besides PRELOAD_BEFORE_DROP (smtp.service._preload_filters: the SMTP-level filters).
DROPPING_SERVICES = {
    "mailyard.smtp.service": ["mailyard.filters.smtp_level"],  # smtp and submission
    "mailyard.delivery.service": [],  # send
}

CHILD = r"""
import importlib, json, os, sys
entry, own_preloads, reach = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])
importlib.import_module(entry)
for name in own_preloads:
    importlib.import_module(name)
from mailyard.services.privileges import drop_privileges
drop_privileges()
missing = sorted(m for m in reach if m not in sys.modules)
for name in reach:
    importlib.import_module(name)  # as the dropped user
print(json.dumps({"uid": os.getuid(), "missing": missing}))
"""


def reachable(graph: dict[str, set[str]], entry: str) -> list[str]:
    seen: set[str] = set()
    todo = [entry]
    while todo:
        module = todo.pop()
        if module not in seen:
            seen.add(module)
            todo.extend(graph[module])
    return sorted(seen)


@pytest.mark.parametrize("entry", sorted(DROPPING_SERVICES))
def test_a_service_has_everything_of_ours_loaded_when_it_drops_root(entry: str) -> None:
    reach = reachable(import_graph(), entry)
    assert len(reach) > 10  # the graph is real: a service reaches much of the package
    done = subprocess.run([sys.executable, "-c", CHILD, entry, json.dumps(DROPPING_SERVICES[entry]),
                           json.dumps(reach)], capture_output=True, text=True, timeout=120,
                          cwd="/")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    if os.geteuid() == 0:
        assert result["uid"] == pwd.getpwnam(MAIL_USER).pw_uid
    assert result["missing"] == [], (f"{entry} imports these only after dropping root: add them "
                                     "to services.privileges.PRELOAD_BEFORE_DROP or import them "
                                     f"at the top of a module it loads: {result['missing']}")


def test_the_check_sees_a_module_left_to_load_after_the_drop() -> None:
    """The subprocess reports a module of ours that nothing loaded before the drop."""
    reach = reachable(import_graph(), "mailyard.smtp.service") + ["mailyard.logtools.cli"]
    done = subprocess.run([sys.executable, "-c", CHILD, "mailyard.smtp.service", "[]",
                           json.dumps(reach)], capture_output=True, text=True, timeout=120,
                          cwd="/")
    assert done.returncode == 0, done.stderr
    assert "mailyard.logtools.cli" in json.loads(done.stdout.strip().splitlines()[-1])["missing"]
