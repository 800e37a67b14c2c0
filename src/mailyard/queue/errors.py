"""The exceptions the queue raises to its callers."""

from __future__ import annotations


class QueueError(RuntimeError):
    """The queue could not take or change a message; nothing half-written was left behind.

    `temporary` is True when trying again later may work (a full disk, a permission problem
    an administrator can fix); an SMTP server answers 451 to it.
    """

    def __init__(self, message: str, *, temporary: bool = True) -> None:
        super().__init__(message)
        self.temporary = temporary


class TornMessage(QueueError):
    """todo/N is not a whole committed message: its envelope does not parse, or mess/N is
    missing or differs from the size and CRC-32 the envelope records. Only a crash before
    the commit's sync round returned leaves one (the client was never answered), so the
    message is removed, not delivered."""
