"""The outcome of one delivery attempt, as qmail's delivery programs report it."""

from __future__ import annotations

import re
from dataclasses import dataclass

SUCCESS = "success"
DEFERRAL = "deferral"
FAILURE = "failure"

_ENHANCED = re.compile(r"\(#([245]\.\d{1,3}\.\d{1,3})\)")
_REPLY_ENHANCED = re.compile(r"\b([245])\d\d[ -]([245]\.\d{1,3}\.\d{1,3})\b")


@dataclass(frozen=True)
class Result:
    """`kind` is success, deferral or failure; `text` has one line per line of the report.

    `status` is the RFC 3463 code for a bounce, `remote_mta` the host that answered, and
    `diagnostic` that host's reply, for the bounce's Diagnostic-Code.
    """

    kind: str
    text: str
    status: str = ""
    remote_mta: str = ""
    diagnostic: str = ""

    def enhanced_status(self) -> str:
        """The status for a DSN: given, else found in the text, else 5.0.0 / 4.0.0."""
        if self.status:
            return self.status
        for pattern in (_REPLY_ENHANCED, _ENHANCED):
            m = pattern.search(self.diagnostic or "") or pattern.search(self.text)
            if m:
                return m.group(m.lastindex or 1)
        return "4.0.0" if self.kind == DEFERRAL else "5.0.0"


def success(text: str, **kw: str) -> Result:
    return Result(SUCCESS, text, **kw)


def deferral(text: str, **kw: str) -> Result:
    return Result(DEFERRAL, text, **kw)


def failure(text: str, **kw: str) -> Result:
    return Result(FAILURE, text, **kw)
