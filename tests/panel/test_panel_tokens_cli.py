"""`mailyard api-token create|list|revoke` as a script's author uses it, against a live panel."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import subprocess

from panel_helpers import PanelNode
from tests.conftest import VENV_BIN


def mailyard(panel: PanelNode, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, MAILYARD_HOME=str(panel.home.root))
    return subprocess.run([str(VENV_BIN / "mailyard"), *args], env=env, capture_output=True,
                          text=True, timeout=120)


def test_a_created_token_is_the_last_line_and_works_until_revoked(panel: PanelNode) -> None:
    made = mailyard(panel, "api-token", "create", "backup-script")
    assert made.returncode == 0, made.stderr
    token = made.stdout.strip().splitlines()[-1]
    headers = {"Authorization": f"Bearer {token}"}
    with panel.client() as c:
        assert c.get("/api/v1/queue/stats", headers=headers).status_code == 200
        listed = json.loads(mailyard(panel, "api-token", "list", "--json").stdout)
        row = next(r for r in listed if r["name"] == "backup-script")
        assert row["last_used"] != "never"
        revoked = mailyard(panel, "api-token", "revoke", "backup-script")
        assert revoked.returncode == 0, revoked.stderr
        assert c.get("/api/v1/queue/stats", headers=headers).status_code == 401


def test_only_the_tokens_sha256_is_stored(panel: PanelNode) -> None:
    token = mailyard(panel, "api-token", "create", "stored-check").stdout.strip().splitlines()[-1]
    db = panel.home.db_url.removeprefix("sqlite:///")
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT name, token_sha256 FROM api_tokens").fetchall()
        dump = "\n".join(conn.iterdump())
    assert ("stored-check", hashlib.sha256(token.encode()).hexdigest()) in rows
    assert token not in dump


def test_token_names_are_checked_and_unique(panel: PanelNode) -> None:
    assert mailyard(panel, "api-token", "create", "twice").returncode == 0
    again = mailyard(panel, "api-token", "create", "twice")
    assert again.returncode == 2 and "exists already" in again.stderr
    bad = mailyard(panel, "api-token", "create", "no spaces; please")
    assert bad.returncode == 2 and "not allowed" in bad.stderr
    missing = mailyard(panel, "api-token", "revoke", "never-made")
    assert missing.returncode == 2 and "no token named 'never-made'" in missing.stderr
