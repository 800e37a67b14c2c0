"""Bounces as plain functions: a failure's final result, whether and where a bounce goes, the DSN."""

from __future__ import annotations

import email.utils
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any

from ..queue.state import BounceReport
from .local import header_block, to_unix_lines
from .result import DEFERRAL, FAILURE, Result
from .retry import LIFETIME_TEXT, expired

# qmail's envelope sender for a double bounce: a bounce of it is discarded, never sent.
DOUBLE_BOUNCE_SENDER = "#@[]"
# Original headers longer than this are cut in the bounce (RFC 3462 asks only for headers;
# a huge header block is usually the abuse that caused the bounce).
MAX_ORIGINAL_HEADER_BYTES = 64 * 1024


# The header every double bounce carries. A bounce of a message from <> that has it is one of
# our double bounces coming back (a loop through another server, or a postmaster address that
# forwards): it is discarded like a triple bounce rather than bounced once more, so a double
# bounce can never start a new loop. A forged header only gets that message's bounce dropped.
DOUBLE_BOUNCE_HEADER = "X-Mailyard-Double-Bounce"


def is_returned_double_bounce(sender: str, original: bytes) -> bool:
    """Whether a failed message from <> is a double bounce of ours (or of another mailyard)."""
    if sender != "":
        return False
    name = DOUBLE_BOUNCE_HEADER.lower().encode() + b":"
    return any(line.lower().startswith(name)
               for line in to_unix_lines(header_block(original)).split(b"\n"))


def settle(result: Result, birth: float, attempt_started: float, lifetime: float) -> Result:
    """The result to record for an attempt started at `attempt_started` of a message born at
    `birth`: a deferral of an attempt started at or after the end of the queue lifetime is a
    failure (status 4.4.7 for a temporary code, as qmail-send gives up); else `result`."""
    if result.kind != DEFERRAL or not expired(birth, attempt_started, lifetime):
        return result
    code = result.enhanced_status()
    return Result(FAILURE, result.text.rstrip("\n") + "\n" + LIFETIME_TEXT,
                  status="4.4.7" if code.startswith("4") else code,
                  remote_mta=result.remote_mta, diagnostic=result.diagnostic)


class BounceKind(Enum):
    """What becomes of the failure reports of a finished message (qmail-send's rules)."""

    BOUNCE = "bounce"  # a message from a sender: the bounce goes to it, from <>
    DOUBLE = "double"  # a bounce (from <>): the double bounce goes to the postmaster
    DOUBLE_DISCARDED = "double discarded"  # a bounce, with double bounces turned off
    TRIPLE_DISCARDED = "triple discarded"  # a double bounce, ours or one come back


@dataclass(frozen=True)
class BounceDecision:
    """`kind`; for a bounce sent, its recipient and its envelope sender."""

    kind: BounceKind
    to_addr: str = ""
    sender: str = ""

    @property
    def sends(self) -> bool:
        return self.kind in (BounceKind.BOUNCE, BounceKind.DOUBLE)


def decide_bounce(sender: str, original: bytes, settings: dict[str, Any]) -> BounceDecision:
    """Whether the failure reports of a message from `sender` (its data `original`) go back
    to the sender, to the postmaster as a double bounce, or nowhere (docs/delivery.md)."""
    if sender == DOUBLE_BOUNCE_SENDER or is_returned_double_bounce(sender, original):
        return BounceDecision(BounceKind.TRIPLE_DISCARDED)
    if sender == "" and not settings["bounce.double_enabled"]:
        return BounceDecision(BounceKind.DOUBLE_DISCARDED)
    if sender == "":
        return BounceDecision(BounceKind.DOUBLE, double_bounce_recipient(settings),
                              DOUBLE_BOUNCE_SENDER)
    return BounceDecision(BounceKind.BOUNCE, sender, "")


def bounce_sender(settings: dict[str, Any]) -> str:
    """Bounce From @ Bounce Host (empty host: the server's hostname)."""
    host = settings.get("bounce.host") or settings["server.hostname"]
    return f"{settings['bounce.from']}@{host}"


def double_bounce_recipient(settings: dict[str, Any]) -> str:
    host = settings.get("bounce.double_host") or settings["server.hostname"]
    return f"{settings['bounce.double_to']}@{host}"


def _ascii(text: str) -> str:
    return "".join(ch if 32 <= ord(ch) < 127 else "?" for ch in text)


def _one_line(text: str) -> str:
    return " ".join(_ascii(part).strip() for part in text.splitlines() if part.strip())


def build_bounce(*, hostname: str, from_addr: str, to_addr: str,
                 reports: Sequence[BounceReport], original: bytes, arrival: float,
                 qid: str, now: float | None = None, double: bool = False) -> bytes:
    """The whole bounce message (LF line endings, as the queue stores messages)."""
    now = time.time() if now is None else now
    boundary = f"{int(now)}.{os.getpid()}.{qid}.mailyard/{_ascii(hostname)}"
    date = email.utils.formatdate(now, localtime=False)
    arrival_date = email.utils.formatdate(arrival, localtime=False)
    message_id = email.utils.make_msgid("bounce", domain=hostname)
    human = [
        f"This is the mail delivery service at {hostname}.",
        "",
        "Your message could not be delivered to the recipients below. The failure is",
        "permanent, so the message will not be tried again.",
        "",
    ]
    for report in reports:
        human.append(f"<{report.recipient}>:")
        human.extend(report.text.splitlines())
        human.append("")
    human.append("The headers of your message are attached.")
    status = [f"Reporting-MTA: dns; {_ascii(hostname)}",
              f"X-Mailyard-Queue-ID: {qid}",
              f"Arrival-Date: {arrival_date}", ""]
    for report in reports:
        status.append(f"Final-Recipient: rfc822; {_ascii(report.recipient)}")
        status.append("Action: failed")
        status.append(f"Status: {report.status}")
        if report.remote_mta:
            status.append(f"Remote-MTA: dns; {_ascii(report.remote_mta)}")
        diagnostic = _one_line(report.diagnostic)
        if diagnostic:
            status.append(f"Diagnostic-Code: smtp; {diagnostic}")
        else:
            status.append(f"Diagnostic-Code: X-mailyard; {_one_line(report.text)}")
        status.append(f"Last-Attempt-Date: {email.utils.formatdate(report.time)}")
        status.append("")
    headers = to_unix_lines(header_block(original))[:MAX_ORIGINAL_HEADER_BYTES]
    if not headers.endswith(b"\n"):
        headers += b"\n"
    top = [
        f"From: Mail Delivery System <{from_addr}>",
        f"To: <{to_addr}>",
        "Subject: Delivery failure: your message could not be delivered",
        f"Date: {date}",
        f"Message-ID: {message_id}",
        "Auto-Submitted: auto-replied",
        *([f"{DOUBLE_BOUNCE_HEADER}: {_ascii(hostname)}"] if double else []),
        "MIME-Version: 1.0",
        f'Content-Type: multipart/report; report-type=delivery-status;\n boundary="{boundary}"',
        "",
        "This is a MIME-formatted delivery status notification (RFC 3464).",
        "",
        f"--{boundary}",
        "Content-Type: text/plain; charset=us-ascii",
        "Content-Description: Notification",
        "",
        *(_ascii(line) for line in human),
        "",
        f"--{boundary}",
        "Content-Type: message/delivery-status",
        "Content-Description: Delivery report",
        "",
        *status,
        f"--{boundary}",
        "Content-Type: text/rfc822-headers",
        "Content-Description: Undelivered message headers",
        "",
    ]
    head = "\n".join(top) + "\n"
    return head.encode() + headers + f"\n--{boundary}--\n".encode()
