"""SMTP-level filtering with the real daemons: ClamAV first, then SpamAssassin, one reply."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import logging
import re
import tempfile
from pathlib import Path

import pytest
from tests.filters.helpers import EICAR, GTUBE, Clamd, message, run, settings_of

from mailyard.filters import clamd, clamscan, spamd
from mailyard.filters.smtp_level import check_message
from mailyard.home import Home

SIGNATURE = "Mailyard.Eicar-Test-File.Local.UNOFFICIAL"  # clamd adds .UNOFFICIAL to local dbs


@pytest.fixture(scope="module")
def daemons(spamd_server, clamd_server):  # type: ignore[no-untyped-def]
    return spamd_server, clamd_server


def spool(tmp_path: Path, data: bytes, name: str = "msg") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def eicar_in_mime(encode: bool) -> bytes:
    attachment = (base64.encodebytes(EICAR).replace(b"\n", b"\r\n") if encode
                  else EICAR + b"\r\n")
    cte = b"base64" if encode else b"7bit"
    return (b"From: mallory@example.org\r\nTo: bob@example.com\r\nSubject: invoice\r\n"
            b"Message-ID: <v-1@example.org>\r\nMIME-Version: 1.0\r\n"
            b"Content-Type: multipart/mixed; boundary=\"XX\"\r\n\r\n"
            b"--XX\r\nContent-Type: text/plain\r\n\r\nPlease see the attachment.\r\n"
            b"--XX\r\nContent-Type: application/octet-stream; name=\"invoice.com\"\r\n"
            b"Content-Transfer-Encoding: " + cte + b"\r\n"
            b"Content-Disposition: attachment; filename=\"invoice.com\"\r\n\r\n"
            + attachment + b"--XX--\r\n")


def check(home: Home, settings: dict, path: Path) -> tuple[int, str, str] | None:
    """The filters' verdict as (code, status, text), or None when the message passes."""
    reply = run(check_message(home, settings, path, "alice@example.org",
                              ["bob@example.com"], "192.0.2.7"))
    return None if reply is None else (reply.code, reply.status, reply.text)


def unused_home(home: Home) -> Home:
    """The same node as seen from a home whose run/ has no daemon sockets: daemons 'down'."""
    root = Path(tempfile.mkdtemp(prefix="mailyard-unused-", dir="/tmp"))
    (root / "run" / "clamav").mkdir(parents=True)
    return dataclasses.replace(home, root=root)


# ---- SpamAssassin -------------------------------------------------------------------------------

def test_gtube_is_refused_with_a_5xx_above_the_smtp_threshold(daemons, module_home, tmp_path):
    settings = settings_of(module_home, spam__smtp_scanning=True, spam__smtp_threshold=10.0)
    reply = check(module_home, settings, spool(tmp_path, message(GTUBE, subject="gtube")))
    assert reply is not None
    code, status, text = reply
    assert (code, status) == (550, "5.7.1")
    assert text.startswith("message refused: judged to be spam (score 1000")


def test_a_clean_message_is_accepted(daemons, module_home, tmp_path):
    settings = settings_of(module_home, spam__smtp_scanning=True, virus__smtp_scanning=True)
    assert check(module_home, settings, spool(tmp_path, message())) is None


def test_gtube_passes_when_smtp_level_spam_scanning_is_off(daemons, module_home, tmp_path):
    settings = settings_of(module_home, spam__smtp_scanning=False)
    assert check(module_home, settings, spool(tmp_path, message(GTUBE))) is None


def test_spamd_down_accepts_unscanned_and_logs_it(module_home, tmp_path, caplog):
    settings = settings_of(module_home, spam__smtp_scanning=True)
    with caplog.at_level(logging.WARNING, logger="mailyard.filters.smtp"):
        reply = check(unused_home(module_home), settings, spool(tmp_path, message(GTUBE)))
    assert reply is None
    assert "accepted unscanned" in caplog.text and "client=192.0.2.7" in caplog.text


async def _with_silent_listener(path: Path, coro):  # type: ignore[no-untyped-def]
    """Run `coro` while a server on the unix socket `path` accepts connections and never
    answers."""
    held: list[asyncio.StreamWriter] = []

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)
        await reader.read(-1)

    server = await asyncio.start_unix_server(hold, str(path))
    try:
        return await coro
    finally:
        for writer in held:
            writer.close()
        server.close()


def test_spamd_too_slow_accepts_unscanned(module_home, tmp_path, caplog):
    slow = unused_home(module_home)
    settings = settings_of(module_home, spam__smtp_scanning=True, spam__timeout=1)
    path = spool(tmp_path, message(GTUBE))
    with caplog.at_level(logging.WARNING, logger="mailyard.filters.smtp"):
        reply = asyncio.run(_with_silent_listener(spamd.socket_path(slow), check_message(
            slow, settings, path, "alice@example.org", ["bob@example.com"], "192.0.2.7")))
    assert reply is None
    assert "within 1 s" in caplog.text


# ---- ClamAV -------------------------------------------------------------------------------------

@pytest.mark.parametrize("encode", [False, True], ids=["raw", "base64-mime"])
def test_eicar_is_refused_with_a_5xx_naming_the_signature(daemons, module_home, tmp_path,
                                                          encode):
    settings = settings_of(module_home, virus__smtp_scanning=True)
    reply = check(module_home, settings, spool(tmp_path, eicar_in_mime(encode)))
    assert reply == (554, "5.7.1", f"message refused: virus {SIGNATURE} found")


def test_virus_scanning_comes_before_spam_scanning(daemons, module_home, tmp_path):
    both = eicar_in_mime(True).replace(b"Please see the attachment.", GTUBE.encode())
    settings = settings_of(module_home, virus__smtp_scanning=True, spam__smtp_scanning=True)
    reply = check(module_home, settings, spool(tmp_path, both))
    assert reply is not None and reply[0] == 554


def test_eicar_passes_when_virus_scanning_is_off(daemons, module_home, tmp_path):
    settings = settings_of(module_home, virus__smtp_scanning=False)
    assert check(module_home, settings, spool(tmp_path, eicar_in_mime(True))) is None


def test_clamd_down_answers_4xx_so_the_sender_keeps_the_message(module_home, tmp_path):
    settings = settings_of(module_home, virus__smtp_scanning=True)
    reply = check(unused_home(module_home), settings, spool(tmp_path, eicar_in_mime(True)))
    assert reply == (451, "4.7.1", "virus scanner unavailable, try again later")


def test_clamd_too_slow_answers_4xx(module_home, tmp_path):
    slow = unused_home(module_home)
    settings = settings_of(module_home, virus__smtp_scanning=True, virus__timeout=1)
    path = spool(tmp_path, message())
    reply = asyncio.run(_with_silent_listener(clamd.socket_path(slow), check_message(
        slow, settings, path, "alice@example.org", ["bob@example.com"], "192.0.2.7")))
    assert reply is not None and reply.name == "VIRUS_SCANNER_UNAVAILABLE"
    assert (reply.code, reply.status) == (451, "4.7.1")


def test_clamd_stopped_answers_4xx_after_it_had_been_scanning(own_home, tmp_path):
    home = own_home
    daemon = Clamd(home)
    daemon.start()
    settings = settings_of(home, virus__smtp_scanning=True)
    path = spool(tmp_path, eicar_in_mime(True))
    try:
        assert check(home, settings, path)[0] == 554
    finally:
        daemon.stop()
    assert not daemon.running()
    assert check(home, settings, path) == (451, "4.7.1",
                                           "virus scanner unavailable, try again later")


def test_clamd_enforces_the_stream_limit_we_compute_and_we_refuse_before_streaming(
        daemons, module_home, tmp_path):
    settings = settings_of(module_home, virus__smtp_scanning=True)
    assert settings["smtp.message_size_mb"] == 20  # clamd was rendered with StreamMaxLength 21M
    big = tmp_path / "big"
    with big.open("wb") as f:
        f.write(message()[:-2])
        line = b"x" * 998 + b"\r\n"
        for _ in range(22 * 1024 * 1024 // len(line)):
            f.write(line)
    # clamd itself cuts the stream off at its limit (our client's check switched off) ...
    with pytest.raises(clamscan.StreamTooLong):
        run(clamscan.scan_file(clamd.socket_path(module_home), big, 120, max_stream=0))
    # ... and check_message refuses it permanently without sending it: scanning is on, so
    # it must not pass unscanned, and retrying cannot make it fit.
    assert check(module_home, settings, big) == (552, "5.3.4",
                                                 "message too big to be scanned for viruses")


def test_a_message_at_the_size_limit_still_fits_in_one_stream(daemons, module_home, tmp_path):
    settings = settings_of(module_home, virus__smtp_scanning=True)
    path = tmp_path / "at-limit"
    with path.open("wb") as f:
        f.write(eicar_in_mime(True).replace(b"--XX--\r\n", b"--XX\r\n"
                                            b"Content-Type: text/plain\r\n\r\n"))
        line = b"y" * 998 + b"\r\n"
        while f.tell() < 20 * 1024 * 1024 - 2000:
            f.write(line)
        f.write(b"--XX--\r\n")
    assert path.stat().st_size <= 20 * 1024 * 1024
    assert check(module_home, settings, path)[0] == 554


@pytest.mark.parametrize("size", [0, 1, clamscan.CHUNK_BYTES, clamscan.CHUNK_BYTES + 1,
                                  3 * clamscan.CHUNK_BYTES - 5])
def test_instream_framing_holds_at_chunk_boundaries(daemons, module_home, tmp_path, size):
    """EICAR at the very end of messages of awkward sizes is still found (and an empty
    message is clean): every byte reaches clamd, framed correctly."""
    path = tmp_path / "sized"
    if size == 0:
        path.write_bytes(b"")
        result = run(clamscan.scan_file(clamd.socket_path(module_home), path, 60))
        assert not result.infected
        return
    filler = max(0, size - len(EICAR))
    path.write_bytes(b"z" * filler + EICAR[: size - filler])
    result = run(clamscan.scan_file(clamd.socket_path(module_home), path, 60))
    assert result.infected is (size >= len(EICAR))


# ---- what the SMTP log's accepted line says of the filters (mailyard trail) --------------------

def test_an_accepted_message_gets_its_verdicts_for_the_log(daemons, module_home, tmp_path):
    settings = settings_of(module_home, spam__smtp_scanning=True, virus__smtp_scanning=True,
                           spam__smtp_threshold=10.0)
    verdicts: list[str] = []
    assert run(check_message(module_home, settings, spool(tmp_path, message()),
                             "alice@example.org", ["bob@example.com"], "192.0.2.7",
                             verdicts=verdicts)) is None
    assert verdicts[0] == "virus:clean"
    assert re.fullmatch(r"spam:-?[0-9.]+/10", verdicts[1]), verdicts
    down: list[str] = []
    assert run(check_message(unused_home(module_home), settings_of(
        module_home, spam__smtp_scanning=True), spool(tmp_path, message(GTUBE), "gtube"),
        "alice@example.org", ["bob@example.com"], "192.0.2.7", verdicts=down)) is None
    assert down == ["spam:unscanned"]
