"""The panel listens where `panel.listen_address` says, loopback unless asked (issue 16, item 9)."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from panel_helpers import make_home, start_panel, stop_process

from mailyard.services.apply_settings import change_settings
from mailyard.settings.registry import setting
from mailyard.settings.types import SettingError
from mailyard.store.db import dispose_all


def test_the_default_is_loopback() -> None:
    assert setting("panel.listen_address").default == "127.0.0.1"


@pytest.mark.parametrize("bad", ["0.0.0.0:2443", "panel.example.test", "", "127.0.0.256"])
def test_a_value_that_is_no_address_is_refused_naming_the_setting(bad: str) -> None:
    with pytest.raises(SettingError) as caught:
        setting("panel.listen_address").parse(bad)
    message = str(caught.value)
    assert "panel.listen_address" in message
    assert "address" in message.lower()


def test_the_panel_listens_on_the_address_set_and_not_elsewhere(tmp_path: Path) -> None:
    home = make_home(tmp_path)
    change_settings(home, {"panel.listen_address": "127.0.0.2"}, apply=False)
    dispose_all()
    port = home.port("panel")
    proc = start_panel(home, url=f"https://127.0.0.2:{port}")
    try:
        assert httpx.get(f"https://127.0.0.2:{port}/signin", verify=False,
                         timeout=30).status_code == 200
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"https://127.0.0.1:{port}/signin", verify=False, timeout=30)
    finally:
        stop_process(proc)
        dispose_all()
