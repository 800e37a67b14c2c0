"""Scope of a setting change: this node's own value, or with cascade the cluster-wide one."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from mailyard.services.apply_settings import change_settings
from mailyard.settings.types import SettingError
from mailyard.store.db import session_scope
from mailyard.store.models import SettingRow
from mailyard.store.settings_store import load_settings

MAILYARD = str(Path(sys.executable).parent / "mailyard")


def _rows(home, key: str) -> dict[str, str]:
    with session_scope(home.db_url) as s:
        return {r.node: r.value for r in s.query(SettingRow).filter(SettingRow.key == key)}


def test_a_change_without_cascade_is_this_nodes_own_value(home):
    change_settings(home, {"smtp.greeting": "only here"})
    assert load_settings(home)["smtp.greeting"] == "only here"
    assert _rows(home, "smtp.greeting") == {home.node_name: "only here"}


def test_a_cascaded_change_is_the_cluster_value_and_drops_the_nodes_override(home):
    change_settings(home, {"smtp.greeting": "only here"})
    result = change_settings(home, {"smtp.greeting": "everywhere"}, cascade=True)
    assert load_settings(home)["smtp.greeting"] == "everywhere"
    assert _rows(home, "smtp.greeting") == {"": "everywhere"}
    assert result.cascade and len(result.change_ids) == 1


def test_a_per_node_setting_refuses_cascade_and_stores_nothing(home):
    before = load_settings(home)["server.hostname"]
    with pytest.raises(SettingError, match="cannot be cascaded"):
        change_settings(home, {"smtp.greeting": "x", "server.hostname": "mx2.example.test"},
                        cascade=True)
    assert load_settings(home)["server.hostname"] == before
    assert load_settings(home)["smtp.greeting"] != "x"


def test_the_cli_sets_for_this_node_or_cascades(home):
    env = dict(os.environ, MAILYARD_HOME=str(home.root))

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([MAILYARD, *args], env=env, capture_output=True, text=True,
                              timeout=60)

    here = run("settings", "set", "smtp.greeting", "local words")
    assert here.returncode == 0, here.stderr
    assert "this node" in here.stdout
    assert _rows(home, "smtp.greeting") == {home.node_name: "local words"}
    everywhere = run("settings", "set", "smtp.greeting", "shared words", "--cascade")
    assert everywhere.returncode == 0, everywhere.stderr
    assert _rows(home, "smtp.greeting") == {"": "shared words"}
    assert run("settings", "get", "smtp.greeting").stdout.strip() == "shared words"
    refused = run("settings", "set", "submission.port", "2587", "--cascade")
    assert refused.returncode == 2
    assert "submission.port" in refused.stderr and "cannot be cascaded" in refused.stderr
    assert load_settings(home)["submission.port"] == 587
