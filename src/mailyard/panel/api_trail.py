"""The delivery trail in the panel: `GET /api/v1/trail?q=…&since=…` and the Trail page.

Both read the node's logs with trail_logs.py, as `mailyard trail` does, in the root helper's
mail owner worker (panel/trail_view.py: the logs are not the panel's to read); the page
shows the same records as the JSON (the template formats them)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import Response

from ..trail import TrailError, query_of, show_time, since_of
from . import pages, trail_view
from .problems import Refused, errors
from .security import Caller, home_of

router = APIRouter(prefix="/trail", tags=["trail"])
page_router = APIRouter(include_in_schema=False)

# The most messages (and refusals) one answer carries, newest kept: an address busy for a
# month has thousands; the API may ask for up to MAX_LIMIT, the page shows DEFAULT_LIMIT.
DEFAULT_LIMIT = 200
MAX_LIMIT = 5000


def _find(request: Request, q: str, since: str, limit: int) -> dict[str, Any]:
    """The trail of `q` (since `since`, when given) as JSON, read by the helper; Refused
    names the bad field."""
    try:
        query = query_of(q)
    except TrailError as exc:
        raise Refused("q", q, str(exc)) from None
    try:
        start = since_of(since) if since else None
    except TrailError as exc:
        raise Refused("since", since, str(exc)) from None
    try:
        return trail_view.find(home_of(request), q.strip(), query, start, limit)
    except trail_view.TrailRefused as exc:
        raise Refused("q", q, str(exc)) from None


@router.get("", responses=errors(503))
def trail_api(request: Request, _who: Caller, q: str, since: str = "",
              limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT
              ) -> dict[str, Any]:
    """What the logs say of the mail of an address, a Message-ID or a queue id (`q`): each
    message's acceptance, delivery attempts, Maildir file or bounce, and the refusals at SMTP
    time. `since`: a period back from now (`3 days`), a local date or epoch seconds."""
    try:
        return _find(request, q, since, limit)
    except trail_view.TrailUnavailable as exc:
        raise HTTPException(503, str(exc)) from None


@page_router.get("/trail")
def trail_page(request: Request, session: pages.SignedIn, q: str = "",
               since: str = "") -> Response:
    found, problem = None, ""
    if q.strip():
        try:
            found = _find(request, q, since, DEFAULT_LIMIT)
        except Refused as exc:
            problem = exc.reason
        except trail_view.TrailUnavailable as exc:
            problem = f"the logs could not be read: {exc}"
    base = pages._base(request, session, "trail", "Delivery Trail")
    return pages.render("trail.html", 422 if problem else 200, **base, q=q, since=since,
                        found=found, problem=problem, show_time=show_time)
