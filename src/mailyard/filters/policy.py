"""Filtering decisions as plain functions: the SMTP replies and where a scanned message goes.

Nothing here touches a socket or a file, so every rule is tested without a daemon. The reply
texts are named entries of the SMTP reply table (smtp/replies.py), so the SMTP log names the
rule that refused a message.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..smtp import replies as R
from ..smtp.replies import Reply
from ..store import models

# Mailbox.spam_action values (the per-mailbox choice of guide 6.1), declared with the model.
SPAM_ACTIONS = models.SPAM_ACTIONS


def virus_reply(signature: str) -> Reply:
    """The refusal for an infected message, naming the signature ClamAV found."""
    # The signature name comes from clamd; keep only what is safe on an SMTP reply line.
    safe = "".join(ch for ch in signature if ch.isalnum() or ch in "._-:/+") or "unknown"
    return R.VIRUS_FOUND.format(signature=safe)


def virus_unavailable_reply() -> Reply:
    return R.VIRUS_SCANNER_UNAVAILABLE


def virus_too_big_reply() -> Reply:
    return R.VIRUS_TOO_BIG_TO_SCAN


def spam_reply(score: float, smtp_threshold: float) -> Reply | None:
    """Refuse at SMTP level only when the score is strictly above the SMTP threshold."""
    if score > smtp_threshold:
        return R.SPAM_REFUSED.format(score=score)
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
