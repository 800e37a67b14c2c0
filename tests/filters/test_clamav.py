"""ClamAV's side: clamd's config and start, the local EICAR database, the definitions table
read from real CVD headers, and freshclam failing cleanly without network."""

from __future__ import annotations

import gzip
import io
import os
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest
from tests.filters.helpers import READY_TIMEOUT, Clamd

from mailyard.filters import clamd, freshclam, virusdb
from mailyard.home import Home
from mailyard.store.settings_store import set_setting

EICAR_NDB = "Mailyard.Eicar-Test-File.Local"


def conf_values(path: Path) -> dict[str, str]:
    values = {}
    for line in path.read_text().splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.partition(" ")
            values[key] = value
    return values


# ---- clamd.conf -------------------------------------------------------------------------------

def test_clamd_conf_follows_the_message_size_setting(own_home: Home) -> None:
    set_setting(own_home, "smtp.message_size_mb", 50)
    conf = conf_values(clamd.render(own_home))
    assert conf["StreamMaxLength"] == "51M"
    assert conf["MaxFileSize"] == "51M"
    assert conf["MaxScanSize"] == "204M"
    assert conf["LocalSocket"] == str(clamd.socket_path(own_home))
    assert "TCPSocket" not in conf and "TCPAddr" not in conf
    assert conf["Foreground"] == "yes"
    assert conf["DatabaseDirectory"] == str(clamd.db_dir(own_home))
    assert conf["LogFile"] == str(clamd.log_file(own_home))
    set_setting(own_home, "smtp.message_size_mb", 0)
    conf = conf_values(clamd.render(own_home))
    assert conf["StreamMaxLength"] == "2047M" and conf["MaxFileSize"] == "2047M"


def test_clamd_accepts_its_rendered_config(own_home: Home) -> None:
    argv = clamd.exec_argv(own_home)
    check = subprocess.run(["clamconf", "-n", "-c", str(clamd.conf_dir(own_home))],
                           capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stderr
    assert argv == [clamd.CLAMD, "-c", str(clamd.conf_file(own_home))]


def test_a_new_node_gets_the_local_eicar_database_and_clamd_starts_with_it(own_home):
    assert not clamd.db_dir(own_home).exists() or not any(clamd.db_dir(own_home).iterdir())
    daemon = Clamd(own_home)  # exec_argv installs the local database
    daemon.start()
    try:
        assert (clamd.db_dir(own_home) / clamd.LOCAL_DB_NAME).is_file()
        assert clamd.running_version(own_home).startswith("ClamAV 1.")
        deadline = time.monotonic() + READY_TIMEOUT
        while "Loaded 1 signatures" not in clamd.log_file(own_home).read_text():
            assert time.monotonic() < deadline, "clamd's banner never reached its log file"
            time.sleep(0.1)
    finally:
        daemon.stop()


def test_version_is_what_clamd_reports() -> None:
    assert clamd.version().startswith("ClamAV 1.")
    assert freshclam.version().startswith("ClamAV 1.")


def test_the_local_database_goes_once_an_official_one_is_there(own_home, tmp_path):
    assert clamd.install_local_signatures(own_home) is True
    local = clamd.db_dir(own_home) / clamd.LOCAL_DB_NAME
    assert local.is_file()
    (clamd.db_dir(own_home) / "daily.cvd").write_bytes(build_cvd(tmp_path, "daily", 7, 2))
    assert clamd.install_local_signatures(own_home) is False
    assert not local.exists()


# ---- the definitions table --------------------------------------------------------------------

def build_cvd(workdir: Path, name: str, version: int, extra: int) -> bytes:
    """A real CVD made by ClamAV's sigtool (offline, unsigned): `extra` hash signatures plus
    the EICAR body signature."""
    build = workdir / f"build-{name}"
    build.mkdir()
    (build / "COPYING").write_text("test database\n")
    (build / f"{name}.ndb").write_text(
        "Test.Eicar.Body:0:*:58354f2150254041505b345c505a58353428505e2937434329377d24\n")
    (build / f"{name}.hdb").write_text("".join(
        f"{i:032x}:{100 + i}:Test.Hash.{i}\n" for i in range(extra)))
    result = subprocess.run(["sigtool", f"--build={name}.cvd", "--unsigned"], cwd=build,
                            input=f"{version}\nmailyard-tests\n", capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    return (build / f"{name}.cvd").read_bytes()


def test_definitions_read_real_cvd_headers_and_count_local_signatures(own_home, tmp_path):
    db = clamd.db_dir(own_home)
    db.mkdir(parents=True, exist_ok=True)
    (db / "main.cvd").write_bytes(build_cvd(tmp_path, "main", 62, 5))
    (db / "daily.cvd").write_bytes(build_cvd(tmp_path, "daily", 27500, 2))
    (db / "local.hdb").write_text("# our own hashes\n\n" + "".join(
        f"{i:032x}:{i + 1}:Local.Hash.{i}\n" for i in range(4)))
    (db / "notes.txt").write_text("not a database\n")
    rows = virusdb.definitions(own_home)
    assert [r["file"] for r in rows] == ["daily.cvd", "main.cvd", "local.hdb"]
    daily, main, local = rows
    assert (daily["signatures"], daily["kind"]) == (3, "official")
    assert "version 27500" in daily["note"] and "mailyard-tests" in daily["note"]
    assert (main["signatures"], main["kind"]) == (6, "official")
    assert daily["build_date"].startswith(time.strftime("%Y-", time.gmtime()))
    assert (local["signatures"], local["kind"]) == (4, "local")
    assert virusdb.summary(own_home) == "13 signatures in 3 database files"


def test_a_cld_header_reads_like_a_cvd_header(tmp_path):
    """freshclam keeps incrementally updated databases as .cld: same header, plain tar."""
    header = b"ClamAV-VDB:08 Jul 2012 17-57 -0400:15140:228024:63:X:X:ccordes:1341784653"
    tar_bytes = io.BytesIO()
    with tarfile.open(fileobj=tar_bytes, mode="w") as tar:
        info = tarfile.TarInfo("daily.info")
        info.size = 0
        tar.addfile(info, io.BytesIO(b""))
    path = tmp_path / "daily.cld"
    path.write_bytes(header.ljust(512, b" ") + tar_bytes.getvalue())
    row = virusdb.describe(path)
    assert (row.file, row.signatures, row.kind) == ("daily.cld", 228024, "official")
    assert row.build_date == "2012-07-08 21:57 UTC"
    assert "version 15140" in row.note


def test_a_damaged_header_is_reported_not_raised(tmp_path):
    path = tmp_path / "main.cvd"
    path.write_bytes(b"garbage".ljust(512, b" ") + gzip.compress(b""))
    row = virusdb.describe(path)
    assert row.signatures == 0 and row.note.startswith("unreadable: not a ClamAV database")


def test_only_the_local_eicar_database_is_said_plainly(own_home):
    clamd.install_local_signatures(own_home)
    rows = virusdb.definitions(own_home)
    assert [(r["file"], r["signatures"], r["kind"]) for r in rows] == [
        (clamd.LOCAL_DB_NAME, 1, "local")]
    assert "detects only the EICAR test file" in rows[0]["note"]
    assert virusdb.summary(own_home).startswith("only the local EICAR test database")


def test_no_database_at_all_is_said_plainly(own_home):
    assert virusdb.definitions(own_home) == []
    assert "no virus database" in virusdb.summary(own_home)


# ---- freshclam without network ----------------------------------------------------------------

def test_freshclam_loop_records_the_failure_and_sleeps_instead_of_spinning(own_home, cli_env):
    clamd.install_local_signatures(own_home)  # as `make run` does for a new node
    argv = freshclam.exec_argv(own_home)
    assert argv[1:3] == ["-m", "mailyard.filters.freshclam_loop"]
    conf = conf_values(freshclam.freshclam_conf(own_home))
    assert conf["DatabaseDirectory"] == str(clamd.db_dir(own_home))
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True, env=cli_env)
    try:
        deadline = time.monotonic() + 300  # offline, freshclam gives up within seconds
        while freshclam.last_status(own_home) is None or \
                "next_run" not in freshclam.last_status(own_home):
            assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else ""
            assert time.monotonic() < deadline, "freshclam never reported"
            time.sleep(0.2)
        status = freshclam.last_status(own_home)
        assert status["ok"] is False
        assert status["exit_code"] != 0 and status["message"]
        # it waits a whole interval before trying again, and is alive doing so
        assert status["next_run"] - status["time"] >= freshclam.UPDATE_INTERVAL_SECONDS
        assert proc.poll() is None
        # the EICAR database is untouched: clamd keeps what it has
        assert (clamd.db_dir(own_home) / clamd.LOCAL_DB_NAME).is_file()
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            code = proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            raise
    assert code == 0  # SIGTERM ends the loop cleanly


@pytest.mark.parametrize(("code", "words"), [(11, "update failed"), (1, "up to date"),
                                             (0, "updated"), (99, "code 99")])
def test_freshclam_exit_codes_are_explained(code, words):
    assert words in freshclam.describe_exit(code)


def test_loop_refuses_a_missing_home_argument():
    out = subprocess.run([sys.executable, "-m", "mailyard.filters.freshclam_loop"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "usage:" in out.stderr
