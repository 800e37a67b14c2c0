"""No call site restates a setting's default (issue 20, item 1).

A default is declared once, in the registry. Code that reads a setting from a mapping that may
lack it calls `settings.registry.value(settings, key)`, which falls back to the declared
default; `settings.get("spam.timeout", 30)` would say 30 a second time, and the two drift apart
the day the registry's changes. The test parses every module under src/mailyard and refuses a
`.get(KEY, DEFAULT)` whose KEY is a registered setting (an f-string key counts when its fixed
parts can only spell registered keys, as `f"service.{name}.start_on_boot"`).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

from mailyard.settings.registry import REGISTRY, value

SRC = Path(__file__).resolve().parents[2] / "src" / "mailyard"


def _names_a_setting(node: ast.expr) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value if node.value in REGISTRY else None
    if isinstance(node, ast.JoinedStr):
        pattern = "".join(re.escape(part.value) if isinstance(part, ast.Constant) else "[^.]+"
                          for part in node.values)
        hits = [key for key in REGISTRY if re.fullmatch(pattern, key)]
        return ast.unparse(node) if hits else None
    return None


def restated_defaults(source: str, filename: str = "<src>") -> list[str]:
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and node.func.attr == "get" and node.args
                and (len(node.args) > 1 or node.keywords)):
            key = _names_a_setting(node.args[0])
            if key is not None:
                found.append(f"{filename}:{node.lineno}: {ast.unparse(node)}")
    return found


def test_no_call_site_restates_a_default() -> None:
    found = [hit for path in sorted(SRC.rglob("*.py"))
             for hit in restated_defaults(path.read_text(), str(path.relative_to(SRC)))]
    assert found == [], "use settings.registry.value(settings, key): " + "; ".join(found)


def test_the_scan_sees_a_restated_default() -> None:
    source = ('t = settings.get("spam.timeout", 30)\n'
              'on = s.get(f"service.{name}.start_on_boot", True)\n'
              'ok = settings.get("spam.timeout")\n'
              'other = row.get("not.a.setting", 1)\n')
    found = restated_defaults(source)
    assert [hit.split(":")[1] for hit in found] == ["1", "2"]


def test_value_falls_back_to_the_declared_default_only() -> None:
    assert value({}, "spam.timeout") == REGISTRY["spam.timeout"].default
    assert value({"spam.timeout": 7}, "spam.timeout") == 7
