"""The envelope of a queued message: sender, recipients and where the message came from."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from .errors import QueueError

# RFC 5321 4.5.3.1.3: a path is at most 256 octets; we allow a little more for odd senders.
MAX_ADDRESS_LENGTH = 320
# Far above any SMTP server's recipient limit (qmail has none, Postfix 1000 by default).
MAX_RECIPIENTS = 10000


def check_address(address: str, *, role: str) -> str:
    """`address` if it is safe to store as one line of the queue, else QueueError."""
    if len(address) > MAX_ADDRESS_LENGTH:
        raise QueueError(f"{role} address is {len(address)} characters long; at most "
                         f"{MAX_ADDRESS_LENGTH} are allowed", temporary=False)
    if any(ch in address for ch in "\r\n\0"):
        raise QueueError(f"{role} address {address!r} contains a line break or NUL",
                         temporary=False)
    return address


# Keys of `Envelope.extra` that the smtp service fills for delivery: header fields to put on
# top of every copy delivered (the Authentication-Results field), and why the message goes
# to the recipient's Spam folder whatever its spam score (a DMARC quarantine).
TRACE_HEADERS = "trace_headers"
QUARANTINE = "quarantine"


@dataclass
class Envelope:
    """Who a message goes to and who sent it; `sender` is "" for the null sender <>.

    `uid` is the unix user that handed the message in (sendmail's caller); None means the
    injecting process's own uid, as qmail-queue records it. It appears in the send log's
    `info msg` line, where the log tools (xwebmail) look for it.
    """

    sender: str
    recipients: list[str]
    uid: int | None = None
    client_ip: str | None = None
    helo: str | None = None
    auth_user: str | None = None
    protocol: str = "ESMTP"
    # Filled in by the queue at commit time. `size` and `crc32` (zlib's CRC-32 of every
    # octet of mess/N) let send tell a complete message from one a crash tore: the SMTP
    # services rename a message into the queue before the round that makes it durable
    # (docs/queue.md, "Group commit"). None in envelopes written before the field existed.
    time: float = 0.0
    qp: int = 0
    size: int = 0
    crc32: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> None:
        check_address(self.sender, role="sender")
        if not self.recipients:
            raise QueueError("a message needs at least one recipient", temporary=False)
        if len(self.recipients) > MAX_RECIPIENTS:
            raise QueueError(f"{len(self.recipients)} recipients; at most {MAX_RECIPIENTS} "
                             "are allowed in one message", temporary=False)
        for rcpt in self.recipients:
            check_address(rcpt, role="recipient")
            if not rcpt:
                raise QueueError("an empty recipient address <> cannot be delivered",
                                 temporary=False)

    def to_bytes(self) -> bytes:
        # The fields as they are (asdict's deep copy is most of the cost, and JSON copies anyway).
        return json.dumps({name: getattr(self, name) for name in _FIELDS},
                          sort_keys=True).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> Envelope:
        raw = json.loads(data)
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in raw.items() if k in known})


_FIELDS = tuple(Envelope.__dataclass_fields__)
