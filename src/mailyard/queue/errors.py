"""The one exception the queue raises to its callers."""

from __future__ import annotations


class QueueError(RuntimeError):
    """The queue could not take or change a message; nothing half-written was left behind.

    `temporary` is True when trying again later may work (a full disk, a permission problem
    an administrator can fix); an SMTP server answers 451 to it.
    """

    def __init__(self, message: str, *, temporary: bool = True) -> None:
        super().__init__(message)
        self.temporary = temporary
