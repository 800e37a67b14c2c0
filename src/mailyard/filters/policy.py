"""Filtering decisions as plain functions: the SMTP replies and where a scanned message goes.

Nothing here touches a socket or a file, so every rule is tested without a daemon. The reply
texts live in one table (REPLIES) so that the SMTP service, the docs and the tests agree.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..store import models

Reply = tuple[int, str, str]  # (SMTP code, enhanced status code, text)

# What the SMTP service answers at the end of DATA when a filter refuses or cannot decide.
REPLIES: dict[str, Reply] = {
    # Permanent: the same message will be refused again; the sender's MTA bounces it.
    "virus": (554, "5.7.1", "message refused: virus {signature} found"),
    # Temporary: clamd is down or slow. The sender keeps the message and retries, so turning
    # virus scanning on can delay mail but never lose it (the guide's warning, made safe).
    "virus_unavailable": (451, "4.7.1", "virus scanner unavailable, try again later"),
    # Permanent: bigger than clamd accepts in one stream; retrying cannot help. Only reachable
    # when clamd's StreamMaxLength is below the message size setting (see clamd.py).
    "virus_too_big": (552, "5.3.4", "message too big to be scanned for viruses"),
    "spam": (550, "5.7.1", "message refused: judged to be spam (score {score:.1f})"),
}

# Mailbox.spam_action values (the per-mailbox choice of guide 6.1), declared with the model.
SPAM_ACTIONS = models.SPAM_ACTIONS


def virus_reply(signature: str) -> Reply:
    """The refusal for an infected message, naming the signature ClamAV found."""
    code, status, text = REPLIES["virus"]
    # The signature name comes from clamd; keep only what is safe on an SMTP reply line.
    safe = "".join(ch for ch in signature if ch.isalnum() or ch in "._-:/+") or "unknown"
    return code, status, text.format(signature=safe)


def virus_unavailable_reply() -> Reply:
    return REPLIES["virus_unavailable"]


def virus_too_big_reply() -> Reply:
    return REPLIES["virus_too_big"]


def spam_reply(score: float, smtp_threshold: float) -> Reply | None:
    """Refuse at SMTP level only when the score is strictly above the SMTP threshold."""
    if score > smtp_threshold:
        code, status, text = REPLIES["spam"]
        return code, status, text.format(score=score)
    return None


@dataclass(frozen=True)
class Filing:
    folder: str  # "INBOX" or "Spam"
    discard: bool


def file_message(is_spam: bool, spam_action: str) -> Filing:
    """Where a message scanned at the mailbox goes, by its verdict and the mailbox's choice.

    An unknown action files spam into the Spam folder (the default), never discards it.
    """
    if not is_spam:
        return Filing("INBOX", False)
    if spam_action == "inbox":
        return Filing("INBOX", False)
    if spam_action == "discard":
        return Filing("INBOX", True)
    return Filing("Spam", False)
