"""Every setting of the registry is a field on a panel page, or marked CLI-only with its
reason beside its declaration (issue 20, item 1): none is forgotten by the pages."""

from __future__ import annotations

from mailyard.panel import boxes
from mailyard.settings.registry import REGISTRY


def test_every_setting_is_on_a_page_or_marked_cli_only() -> None:
    shown = {key for _title, page in boxes.PAGES.values() for box in page for key in box.keys}
    forgotten = sorted(k for k, s in REGISTRY.items() if k not in shown and not s.cli_only)
    assert forgotten == []
    marked_but_shown = sorted(k for k, s in REGISTRY.items() if s.cli_only and k in shown)
    assert marked_but_shown == []
