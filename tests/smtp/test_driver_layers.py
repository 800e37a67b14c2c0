"""The SMTP driver only moves bytes: its modules build no reply and read no setting.

Every reply the driver sends comes from `policy` (which reads the reply table); every setting
it uses comes through `Policy`. The check reads the driver's source (AST), so a reply built or
a setting read in the driver fails here rather than in review.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import mailyard.smtp

SMTP = Path(mailyard.smtp.__file__).parent
DRIVER_MODULES = ("wire.py", "server.py", "conversation.py", "transaction.py", "loglines.py",
                  "workers.py", "shared.py")
# Names of the reply table a driver module may import: the type, for annotations and isinstance.
ALLOWED_FROM_REPLIES = {"Reply"}


def violations(source: str) -> list[str]:
    """What in `source` builds a reply or reads a setting."""
    found: list[str] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and (node.module or "").endswith("replies"):
            found += [f"imports {a.name} from the reply table" for a in node.names
                      if a.name not in ALLOWED_FROM_REPLIES]
        elif isinstance(node, ast.ImportFrom) and any(a.name == "replies" for a in node.names):
            found.append("imports the reply table")
        elif isinstance(node, ast.Import) and any(a.name.endswith("replies") for a in node.names):
            found.append("imports the reply table")
        elif isinstance(node, ast.Call):
            func = node.func
            name = func.id if isinstance(func, ast.Name) else \
                func.attr if isinstance(func, ast.Attribute) else ""
            if name in ("Reply", "custom", "with_text"):
                found.append(f"builds a reply with {name}() at line {node.lineno}")
            if (name == "format" and isinstance(func, ast.Attribute)
                    and not isinstance(func.value, ast.Constant)):
                found.append(f"formats something (a reply?) at line {node.lineno}")
            if name == "get" and isinstance(func, ast.Attribute) and _is_settings(func.value):
                found.append(f"reads a setting with .get at line {node.lineno}")
        elif isinstance(node, ast.Subscript) and _is_settings(node.value):
            found.append(f"reads a setting with [] at line {node.lineno}")
    return found


def _is_settings(node: ast.AST) -> bool:
    return (isinstance(node, ast.Name) and node.id == "settings"
            or isinstance(node, ast.Attribute) and node.attr == "settings")


@pytest.mark.parametrize("module", DRIVER_MODULES)
def test_driver_module_builds_no_reply_and_reads_no_setting(module: str) -> None:
    assert violations((SMTP / module).read_text()) == []


@pytest.mark.parametrize("source", [
    "from . import replies as R\nx = R.OK\n",
    "from .replies import QUEUED\n",
    "x = reply.format(qid=q)\n",
    "x = Reply(250, '2.0.0', 'Ok')\n",
    "x = self.settings['smtp.timeout']\n",
    "x = settings.get('smtp.timeout', 300)\n",
])
def test_the_check_catches_what_it_forbids(source: str) -> None:
    assert violations(source)


def test_the_old_driver_shape_would_fail() -> None:
    """The driver as it was before the split (decisions inline) is what the check refuses."""
    old = ("self._reply({Rset: R.RESET_OK, Noop: R.OK}[type(event)])\n"
           "self._end(R.TIMEOUT.format(hostname=self.policy.hostname))\n")
    assert violations("from . import replies as R\n" + old)
