"""The delivery trail as the panel reads it: through the root helper (request `trail`), whose
mail owner worker reads the logs (0640, the mail owner's group; the panel's user is not in
it). Without a helper the logs are read in this process, as `mailyard trail` does."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..services import helper
from ..trail import Query
from ..trail_logs import trail

if TYPE_CHECKING:
    from ..home import Home


class TrailUnavailable(RuntimeError):
    """The helper could not read the logs; the text says why."""


class TrailRefused(ValueError):
    """The helper refused the query (e.g. a control character the trail's own check let
    through); the text says why."""


def find(home: Home, text: str, query: Query, since: float | None, limit: int
         ) -> dict[str, Any]:
    """The trail of `text` (already checked: `query` is what it parses to) as JSON, the
    newest `limit` messages and refusals."""
    try:
        found: dict[str, Any] = helper.call(home, "trail", q=text, since=since, limit=limit)
    except helper.HelperUnavailable:
        return trail(home.log_dir, query, since).to_json(limit)
    except helper.HelperRefused as exc:
        raise TrailRefused(str(exc)) from None
    except helper.HelperError as exc:
        raise TrailUnavailable(str(exc)) from None
    return found
