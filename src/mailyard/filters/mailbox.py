"""Mailbox-level spam scanning at local delivery: spamd per user, then where the message goes.

Called by local delivery for each recipient mailbox before the message is written:

    verdict = await scan_for_mailbox(home, settings, address, message)
    if verdict.discard: record it as delivered (the mailbox chose to discard spam)
    else: write verdict.message into verdict.folder ("INBOX" or "Spam")

The message comes back unchanged, into INBOX, when mailbox scanning is off, when the message
is bigger than spamd is asked to scan, or when spamd is down or slow: spam scanning never
holds up or loses mail.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..settings.registry import value
from ..store.accounts import get_mailbox
from . import spamc
from .policy import SPAM_ACTIONS, file_message
from .spamd import render_mailbox_prefs, user_dir
from .spamd import socket_path as spamd_socket

if TYPE_CHECKING:
    from ..home import Home

log = logging.getLogger("mailyard.filters.mailbox")


@dataclass(frozen=True)
class MailboxVerdict:
    message: bytes  # what to store: spamd's marked copy, or the original
    folder: str  # "INBOX" or "Spam"
    discard: bool  # True: the mailbox discards spam; store nothing
    scanned: bool = False  # False when the message went on unscanned
    score: float | None = None


def _spam_action(home: Home, address: str) -> str:
    info = get_mailbox(home, address)
    return info.spam_action if info is not None else SPAM_ACTIONS[0]


def _ensure_user_prefs(home: Home, address: str) -> None:
    """A mailbox added since spamd's files were last rendered gets its user_prefs (with its
    domain's preferences) before its first scan; later changes re-render them all."""
    if (user_dir(home, address) / "user_prefs").exists():
        return
    try:
        render_mailbox_prefs(home, address)
    except OSError as exc:  # never a reason not to deliver
        log.warning("cannot write user_prefs for %s: %s", address, exc)


async def scan_for_mailbox(home: Home, settings: dict[str, Any], address: str,
                           message: bytes) -> MailboxVerdict:
    """Scan `message` for the mailbox `address` with its own preferences and Bayes data."""
    unchanged = MailboxVerdict(message, "INBOX", False)
    if not value(settings, "spam.mailbox_scanning"):
        return unchanged
    if len(message) > spamc.MAX_SCAN_BYTES:
        return unchanged
    timeout = float(value(settings, "spam.timeout"))
    await asyncio.to_thread(_ensure_user_prefs, home, address)
    try:
        result = await spamc.process(spamd_socket(home), message, timeout,
                                     user=address.strip().lower())
    except spamc.SpamdUnavailable as exc:
        log.warning("mailbox spam scan unavailable, delivered unscanned to %s: %s", address, exc)
        return unchanged
    assert result.message is not None
    action = await asyncio.to_thread(_spam_action, home, address) if result.is_spam else ""
    filing = file_message(result.is_spam, action)
    return MailboxVerdict(result.message, filing.folder, filing.discard, True, result.score)
