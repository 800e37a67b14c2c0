"""The API's error answers: refused values (422: field, value, reason) and other problems."""

from __future__ import annotations

import time
from typing import Any

from fastapi import Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from pydantic import BaseModel

from ..settings.types import SettingError
from ..store.outage import StoreUnavailable, describe_error
from . import limits_view


class Problem(BaseModel):
    """Anything other than a refused value: not signed in, not found, a conflict, unavailable."""

    detail: str


class Refusal(BaseModel):
    """A refused value: the field, the value given, what is allowed, and all that as a sentence."""

    field: str
    value: Any = None
    reason: str
    message: str = ""


class Refused(Exception):
    """Raised by a route for a value it refuses; answered 422 with a Refusal."""

    def __init__(self, field: str, value: Any, reason: str) -> None:
        super().__init__(f"{field}: {value!r} is not allowed; {reason}")
        self.field = field
        self.value = value
        self.reason = reason


_DESCRIPTIONS = {
    401: "No valid session or bearer token",
    403: "CSRF check failed or cross-site request",
    404: "No such object",
    409: "Conflicts with the node's state (for example the node is not running)",
    422: "A value was refused: the field, the value and what is allowed",
    503: "This part of the node is not installed or not available",
}


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` for the error codes a route may answer (401 and 403 always)."""
    wanted = sorted({401, 403, 422, *codes})
    return {code: {"model": Refusal if code == 422 else Problem,
                   "description": _DESCRIPTIONS[code]} for code in wanted}


def refusal_response(field: str, value: Any, reason: str) -> JSONResponse:
    body = Refusal(field=field, value=jsonable_encoder(value), reason=reason,
                   message=f"{field}: {value!r} is not allowed; {reason}")
    return JSONResponse(body.model_dump(), status_code=422)


async def setting_error_handler(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, SettingError)
    return refusal_response(exc.key, exc.value, exc.allowed)


async def refused_handler(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, Refused)
    return refusal_response(exc.field, exc.value, exc.reason)


async def validation_error_handler(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    first = exc.errors()[0] if exc.errors() else {"loc": ("body",), "msg": "invalid request"}
    loc = [str(part) for part in first.get("loc", ()) if part not in ("body", "query", "path")]
    field = ".".join(loc) or "body"
    value = first.get("input")
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    try:
        value = jsonable_encoder(value)
    except (TypeError, ValueError):
        value = repr(value)
    return refusal_response(field, value, str(first.get("msg", "invalid value")))


async def store_away_handler(request: Request, exc: Exception) -> Response:
    """The store did not answer (a cluster's PostgreSQL is away) and the local cache could not
    stand in, e.g. for a change: 503 and what happened, for the API and for the pages."""
    reason = str(exc) if isinstance(exc, StoreUnavailable) else describe_error(exc)
    text = (f"The store did not answer ({reason}); try again when it is back. Mail goes on "
            "meanwhile: a cluster node works from its local cache of the store.")
    if request.url.path.startswith("/api/"):
        return JSONResponse({"detail": text}, status_code=503)
    return PlainTextResponse(text, status_code=503)


# ---- the problems list shown on every page (issue 19: senders over an outbound limit) -----------


def page_problems(home: Any) -> list[str]:
    """Warnings for the top of every page: each sender refused by an outbound rate limit in
    the last hour (docs/limits.md). A counter file that cannot be read shows nothing."""
    try:
        over = limits_view.refusals(home)
    except (OSError, limits_view.LimitsUnavailable):
        return []
    out = []
    for key, when, rule, limit, _count in over:
        what = "recipients" if rule == "recipients" else "messages"
        scope = " for its whole domain" if rule == "domain" else ""
        out.append(f"{key} passed its limit of {limit} {what} per hour{scope} at "
                   f"{time.strftime('%H:%M', time.localtime(float(when)))} and is refused "
                   "mail to other servers until its count falls (mailyard limits).")
    return out
