"""SMTP-level filtering at the end of DATA: ClamAV first, then SpamAssassin; one reply or None.

Called by the SMTP service with the spooled message before it answers the DATA command:

    reply = await check_message(home, settings, path, sender, recipients, client_ip)
    if reply is None: accept (queue it, 250); else answer code + enhanced status + text.

Virus scanning never lets a message pass unscanned while it is on: clamd down or slow gives
a 4xx so the sender keeps the message. Spam scanning never loses mail either: spamd down or
slow lets the message through unscanned (it is still scanned at the mailbox), and says so in
the log.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..settings.registry import value
from ..smtp.replies import Reply
from . import clamscan, spamc
from .clamd import socket_path as clamd_socket
from .limits import stream_max_bytes
from .policy import spam_reply, virus_reply, virus_too_big_reply, virus_unavailable_reply
from .spamd import socket_path as spamd_socket

if TYPE_CHECKING:
    from ..home import Home

log = logging.getLogger("mailyard.filters.smtp")


def _who(sender: str, recipients: list[str], client_ip: str) -> str:
    return f"from=<{sender}> to={len(recipients)} client={client_ip}"


async def check_virus(home: Home, settings: dict[str, Any], path: Path, who: str = "",
                      verdicts: list[str] | None = None) -> Reply | None:
    """ClamAV's part: None when clean, else the 5xx (infected, too big) or 4xx (unavailable).
    A clean result is added to `verdicts` (`virus:clean`) for the SMTP log's accepted line."""
    timeout = float(value(settings, "virus.timeout"))
    try:
        result = await clamscan.scan_file(clamd_socket(home), path, timeout,
                                          max_stream=stream_max_bytes(settings))
    except clamscan.StreamTooLong as exc:
        log.warning("virus scan refused, message too big for clamd: %s %s", exc, who)
        return virus_too_big_reply()
    except clamscan.ClamdUnavailable as exc:
        log.warning("virus scan unavailable, deferring: %s %s", exc, who)
        return virus_unavailable_reply()
    if result.infected:
        log.info("virus found: %s %s", result.signature, who)
        return virus_reply(result.signature or "unknown")
    if verdicts is not None:
        verdicts.append("virus:clean")
    return None


async def check_spam(home: Home, settings: dict[str, Any], path: Path, who: str = "",
                     verdicts: list[str] | None = None) -> Reply | None:
    """SpamAssassin's part: a 5xx above the SMTP threshold, else None (also when spamd fails).
    The score of a message let through goes into `verdicts` (`spam:SCORE/THRESHOLD`, or
    `spam:unscanned`) for the SMTP log's accepted line."""
    size = path.stat().st_size
    if size > spamc.MAX_SCAN_BYTES:
        log.info("spam scan skipped: %d bytes is over %d %s", size, spamc.MAX_SCAN_BYTES, who)
        return None
    message = await asyncio.to_thread(path.read_bytes)
    timeout = float(value(settings, "spam.timeout"))
    try:
        result = await spamc.check(spamd_socket(home), message, timeout)
    except spamc.SpamdUnavailable as exc:
        log.warning("spam scan unavailable, accepted unscanned: %s %s", exc, who)
        if verdicts is not None:
            verdicts.append("spam:unscanned")
        return None
    threshold = float(value(settings, "spam.smtp_threshold"))
    reply = spam_reply(result.score, threshold)
    if reply is not None:
        log.info("spam refused: score %.1f %s", result.score, who)
    elif verdicts is not None:
        verdicts.append(f"spam:{result.score:g}/{threshold:g}")
    return reply


async def check_message(home: Home, settings: dict[str, Any], path: Path, sender: str,
                        recipients: list[str], client_ip: str,
                        verdicts: list[str] | None = None) -> Reply | None:
    """The SMTP reply for a received message, or None to accept it (what each filter found
    is then in `verdicts`, when given)."""
    who = _who(sender, recipients, client_ip)
    if value(settings, "virus.smtp_scanning"):
        reply = await check_virus(home, settings, path, who, verdicts)
        if reply is not None:
            return reply
    if value(settings, "spam.smtp_scanning"):
        return await check_spam(home, settings, path, who, verdicts)
    return None
