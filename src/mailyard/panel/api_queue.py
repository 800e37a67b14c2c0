"""API: the mail queue: counts, activity graphs, the message list, purge, process, test message."""

from __future__ import annotations

from enum import StrEnum
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import Response
from pydantic import BaseModel

from . import optional, queue_view, rrd
from .problems import errors
from .security import Caller, home_of

if TYPE_CHECKING:
    from ..home import Home

router = APIRouter(prefix="/queue", tags=["queue"])


class QueueStats(BaseModel):
    todo: int
    local: int
    remote: int


class Period(StrEnum):
    day = "day"
    week = "week"
    month = "month"


class ImageFormat(StrEnum):
    png = "png"
    svg = "svg"


class SeriesSummary(BaseModel):
    cur: float
    avg: float
    max: float


class Activity(BaseModel):
    period: Period
    todo: SeriesSummary
    local: SeriesSummary
    remote: SeriesSummary


@router.get("/stats", response_model=QueueStats, responses=errors())
def stats(request: Request, _who: Caller) -> QueueStats:
    """Messages waiting in Todo, Local and Remote right now."""
    return QueueStats(**queue_view.stats(home_of(request)))


@router.get("/activity", response_model=Activity, responses=errors(503))
def activity(request: Request, _who: Caller, period: Period = Period.day) -> Activity:
    """Cur, Avg and Max of each queue over the last day, week or month (sampled each minute)."""
    try:
        numbers = rrd.summary(rrd.rrd_path(home_of(request)), period.value)
    except rrd.RrdError as exc:
        raise HTTPException(503, str(exc)) from None
    return Activity(period=period, **{k: SeriesSummary(**v) for k, v in numbers.items()})


@router.get("/graph", responses={**errors(503), 200: {
    "content": {"image/png": {}, "image/svg+xml": {}},
    "description": "The graph Mail Queue - Combined"}}, response_class=Response)
def graph(request: Request, _who: Caller, period: Period = Period.day,
          format: ImageFormat = ImageFormat.png) -> Response:
    """The graph 'Mail Queue - Combined' (remote and local, with Cur, Avg, Max) as PNG or SVG."""
    try:
        image = rrd.render(rrd.rrd_path(home_of(request)), period.value, format.value)
    except rrd.RrdError as exc:
        raise HTTPException(503, str(exc)) from None
    media = "image/svg+xml" if format is ImageFormat.svg else "image/png"
    return Response(image, media_type=media)


def message_rows(home: Home, which: str) -> list[dict[str, Any]]:
    """The queue list for the page: one row per message (empty when admin is absent)."""
    admin = optional.load(queue_view.ADMIN)
    if admin is None:
        return []
    return queue_view.messages(home, which)
