"""API: the mail queue: counts, activity graphs, the message list, purge, process, test message."""

from __future__ import annotations

from enum import StrEnum
from typing import TYPE_CHECKING, Any, Literal

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field

from . import optional, queue_view, rrd
from .problems import Refused, errors
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


@router.get("/stats", response_model=QueueStats, responses=errors(503))
def stats(request: Request, _who: Caller) -> QueueStats:
    """Messages waiting in Todo, Local and Remote right now."""
    try:
        return QueueStats(**queue_view.stats(home_of(request)))
    except queue_view.QueueUnavailable as exc:
        raise HTTPException(503, str(exc)) from None


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
    if optional.load(queue_view.ADMIN) is None:
        return []
    return queue_view.messages(home, which)


class Which(StrEnum):
    remote_local = "remote+local"
    remote = "remote"
    local = "local"
    todo = "todo"


class QueuedMessage(BaseModel):
    id: str
    date: str
    age_seconds: int
    age: str
    size: int
    sender: str
    recipients: list[str]
    status: str


class RecipientView(BaseModel):
    address: str
    channel: str
    done: bool


class MessageDetail(BaseModel):
    id: str
    date: str
    age_seconds: int
    size: int
    sender: str
    recipients: list[RecipientView]
    status: str
    client_ip: str | None = None
    helo: str | None = None
    auth_user: str | None = None
    protocol: str = ""
    failures: list[dict[str, Any]] = []
    message: str = ""
    truncated: bool = False


class PurgeRequest(BaseModel):
    queues: list[Literal["remote", "local", "todo", "all"]] = Field(min_length=1, max_length=4)


class TestMessage(BaseModel):
    to: str = Field(min_length=1, max_length=320)
    subject: str = Field(min_length=1, max_length=200)
    body: str = Field("", max_length=100_000)


class ActionResult(BaseModel):
    result: dict[str, Any]


class Queued(BaseModel):
    queue_id: str
    to: str
    sender: str
    subject: str


def _admin() -> Any:
    return optional.require(queue_view.ADMIN)


def _queue_error(exc: Exception) -> HTTPException:
    return HTTPException(409, str(exc))


@router.get("/messages", response_model=list[QueuedMessage], responses=errors(503))
def list_messages(request: Request, _who: Caller, which: Which = Which.remote_local) -> Any:
    """Messages in the queue (remote+local lists all of them), oldest first."""
    _admin()
    try:
        return queue_view.messages(home_of(request), which.value)
    except queue_view.QueueUnavailable as exc:
        raise HTTPException(503, str(exc)) from None


@router.get("/messages/{qid}", response_model=MessageDetail, responses=errors(404, 503))
def show_message(qid: str, request: Request, _who: Caller) -> Any:
    """One message: envelope, each recipient's state, failures so far, and its text."""
    _admin()
    try:
        data = queue_view.show(home_of(request), qid)
    except queue_view.QueueRefused as exc:
        raise HTTPException(404, str(exc)) from None
    except queue_view.QueueUnavailable as exc:
        raise HTTPException(503, str(exc)) from None
    data["sender"] = data["sender"] or "<>"
    return data


@router.delete("/messages/{qid}", response_model=ActionResult, responses=errors(404, 503))
def delete_message(qid: str, request: Request, _who: Caller) -> ActionResult:
    """Remove one message from the queue without delivering or bouncing it."""
    _admin()
    try:
        return ActionResult(result=queue_view.delete(home_of(request), qid))
    except queue_view.QueueRefused as exc:
        raise HTTPException(404, str(exc)) from None
    except queue_view.QueueUnavailable as exc:
        raise HTTPException(503, str(exc)) from None


@router.post("/purge", response_model=ActionResult, responses=errors(409, 503))
def purge(body: PurgeRequest, request: Request, _who: Caller) -> ActionResult:
    """Delete every message of the selected queues (remote, local, todo or all) for good."""
    _admin()
    home = home_of(request)
    chosen = ["all"] if "all" in body.queues else list(dict.fromkeys(body.queues))
    results: dict[str, Any] = {}
    try:
        for which in chosen:
            results[which] = queue_view.purge(home, which)
    except (queue_view.QueueRefused, queue_view.QueueUnavailable) as exc:
        raise _queue_error(exc) from None
    return ActionResult(result=results)


@router.post("/process", response_model=ActionResult, responses=errors(409, 503))
def process(request: Request, _who: Caller) -> ActionResult:
    """Tell the send service to try every waiting delivery now (Process Mail Queue)."""
    _admin()
    try:
        result = queue_view.process(home_of(request))
    except (queue_view.QueueRefused, queue_view.QueueUnavailable) as exc:
        raise _queue_error(exc) from None
    if not result.get("service_running", True):
        raise HTTPException(409, "the send service is not running, so nothing can process the "
                            "queue; start it on the MTA page (SMTP Status (outbound))")
    return ActionResult(result=result)


@router.post("/test-message", response_model=Queued, status_code=201,
             responses=errors(422, 503))
def send_test(body: TestMessage, request: Request, _who: Caller) -> Queued:
    """Put a test message into the queue (Send A Test Message)."""
    _admin()
    try:
        made = queue_view.send_test(home_of(request), body.to, body.subject, body.body)
    except queue_view.QueueRefused as exc:
        raise Refused("to", body.to, str(exc)) from None
    except queue_view.QueueUnavailable as exc:
        raise HTTPException(503, str(exc)) from None
    return Queued(queue_id=str(made["id"]), to=made["to"], sender=made["from"],
                  subject=made["subject"])
