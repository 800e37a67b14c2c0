"""The webmail settings of xwebmail are on the panel's MTA page and change through it."""

from __future__ import annotations

import html
import time
from collections.abc import Iterator
from contextlib import closing

import pytest
from tests.panel.panel_helpers import (
    PanelNode,
    make_home,
    panel_url,
    sign_in,
    start_panel,
    stop_process,
)

from mailyard.panel.tokens import create_token
from mailyard.store.db import dispose_all
from mailyard.store.settings_store import load_settings


@pytest.fixture(scope="module")
def panel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PanelNode]:
    home = make_home(tmp_path_factory.mktemp("panel"))
    token = create_token(home, "tests")
    dispose_all()
    started_at = time.time()
    proc = start_panel(home)
    try:
        yield PanelNode(home, panel_url(home), token, proc, int(started_at))
    finally:
        stop_process(proc)
        dispose_all()


def test_the_mta_page_shows_the_webmail_settings_and_saves_them(panel: PanelNode) -> None:
    client, csrf = sign_in(panel)
    headers = {"X-CSRF-Token": csrf, "Origin": panel.url}
    with closing(client):
        page = html.unescape(client.get("/mta").text)
        assert "Log Tools: Webmail" in page
        assert 'id="f-logtools-webmail-user"' in page and 'value="www-data"' in page
        assert 'id="f-logtools-webmail-clients"' in page
        put = client.put("/api/v1/settings/logtools.webmail_clients",
                         json={"value": "127.0.0.1\n::1"}, headers=headers)
        assert put.status_code == 200, put.text
        refused = client.put("/api/v1/settings/logtools.webmail_user",
                             json={"value": "www data; rm"}, headers=headers)
        assert refused.status_code == 422
        assert "logtools.webmail_user" in refused.text and "system user name" in refused.text
    dispose_all()
    values = load_settings(panel.home)
    assert values["logtools.webmail_clients"] == ["127.0.0.1/32", "::1/128"]
    assert values["logtools.webmail_user"] == "www-data"
