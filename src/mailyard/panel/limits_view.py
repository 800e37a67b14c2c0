"""The outbound rate counters as the panel reads them: through the root helper (request
`limits`), whose mail owner worker opens HOME/var/limits (0750, the mail owner's; the
counters name senders). Without a helper they are read in this process, as
`mailyard limits` does."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..services import helper
from ..smtp.ratereport import as_json, report
from ..smtp.ratetable import RateTable

if TYPE_CHECKING:
    from ..home import Home


# What a page waits for its warnings: the helper does one request at a time, and a warning is
# not worth holding every page while it restarts a slow service (clamd takes 20 s or more).
WARNINGS_WAIT_SECONDS = 5.0


class LimitsUnavailable(RuntimeError):
    """The helper could not read the counters; the text says why."""


def limits_report(home: Home) -> dict[str, Any]:
    """The limits and every sender counted or refused in the last hour (`mailyard limits
    --json`)."""
    try:
        found: dict[str, Any] = helper.call(home, "limits", part="report")
    except helper.HelperUnavailable:
        return as_json(*report(home))
    except helper.HelperError as exc:
        raise LimitsUnavailable(str(exc)) from None
    return found


def refusals(home: Home) -> list[tuple[str, float, str, int, int]]:
    """The keys refused in the last hour: (key, when, rule, limit, count), by key.
    LimitsUnavailable (or OSError without a helper) when the counters cannot be read."""
    try:
        rows = helper.call(home, "limits", timeout=WARNINGS_WAIT_SECONDS, part="over")
    except helper.HelperUnavailable:
        with RateTable(home) as table:
            _counts, over = table.report()
        rows = [[key, *row] for key, row in sorted(over.items())]
    except helper.HelperError as exc:
        raise LimitsUnavailable(str(exc)) from None
    return [(str(k), float(w), str(r), int(lim), int(c)) for k, w, r, lim, c in rows]
