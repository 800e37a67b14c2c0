"""The Received header our servers put on top of every message (RFC 5321 4.4, RFC 3848)."""

from __future__ import annotations

import email.utils
import re
import time

# The HELO name is the client's free text; keep it to what is safe in a header comment.
_UNSAFE = re.compile(r"[^A-Za-z0-9.\-:\[\]_]")
MAX_HELO_IN_HEADER = 100
# The date of the last second a header was made in: formatting it is most of a header's cost.
_last_date: tuple[int, str] = (-1, "")


def _date(now: float | None) -> str:
    global _last_date
    if now is not None:
        return email.utils.formatdate(now, localtime=True)
    second = int(time.time())
    if _last_date[0] != second:
        _last_date = (second, email.utils.formatdate(second, localtime=True))
    return _last_date[1]


def received_header(*, helo: str, client_ip: str, hostname: str, protocol: str,
                    recipient: str | None = None, now: float | None = None) -> bytes:
    """`Received: from HELO ([IP]) by HOST (mailyard) with PROTO [for <rcpt>]; DATE`, CRLF.

    `for` is only given for a single recipient, so Bcc recipients are not shown to others.
    """
    safe_helo = _UNSAFE.sub("?", helo)[:MAX_HELO_IN_HEADER] or "unknown"
    date = _date(now)
    tail = f"\r\n\tfor <{recipient}>" if recipient else ""
    text = (f"Received: from {safe_helo} ([{client_ip}])\r\n"
            f"\tby {hostname} (mailyard) with {protocol}{tail};\r\n"
            f"\t{date}\r\n")
    return text.encode("ascii", "replace")
