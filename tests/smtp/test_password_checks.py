"""A burst of SMTP logins (issue 16 item 9): at most PASSWORD_CHECKS argon2 checks at once per
process, PASSWORD_QUEUE more waiting, the rest told to try again (454), never a wrong 535."""

from __future__ import annotations

import asyncio

from mailyard.home import Home
from mailyard.smtp import directory as D
from mailyard.store import accounts

JOE = "joe@example.org"


def test_a_burst_is_capped_and_the_excess_asked_to_try_again(home: Home, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    accounts.add_domain(home, "example.org")
    accounts.add_mailbox(home, JOE, "correct horse battery")
    directory = D.Directory(home)
    running = {"now": 0, "most": 0}
    real = accounts.check_mailbox_password

    def counted(*args: object) -> bool:  # the real check, with a count of how many overlap
        running["now"] += 1
        running["most"] = max(running["most"], running["now"])
        try:
            return bool(real(*args))  # type: ignore[arg-type]
        finally:
            running["now"] -= 1

    monkeypatch.setattr(accounts, "check_mailbox_password", counted)

    async def burst() -> list[object]:
        tries = [directory.check_password(JOE, "correct horse battery") for _ in range(40)]
        return await asyncio.gather(*tries, return_exceptions=True)

    outcomes = asyncio.run(burst())
    busy = [o for o in outcomes if isinstance(o, D.PasswordChecksBusy)]
    assert len(busy) == 40 - D.PASSWORD_CHECKS - D.PASSWORD_QUEUE
    assert all(o is True for o in outcomes if not isinstance(o, D.PasswordChecksBusy))
    assert running["most"] <= D.PASSWORD_CHECKS
