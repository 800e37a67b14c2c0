"""API: the mail queue: counts, activity graphs, the message list, purge, process, test message."""

from __future__ import annotations

from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, Any, Literal
from urllib.parse import urlencode

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field, model_validator

from ..queue import select as queue_select
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
    channel: str | None  # None once every recipient of its channel is done
    done: bool
    state: Literal["pending", "deferred", "done", "failed"] = "pending"
    attempts: int = 0
    last_reply: str | None = None
    next_retry: str | None = None  # ISO 8601


class MessageDetail(BaseModel):
    id: str
    date: str
    age_seconds: int
    size: int
    sender: str
    recipients: list[RecipientView]
    status: str
    held: bool = False
    hold_reason: str | None = None
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


# ---- the queue browser: filtered pages and actions on a selection -------------------------------

RecipientState = Literal["pending", "deferred", "done", "failed"]
QueueAction = Literal["hold", "release", "retry", "bounce", "delete"]
# The most ids one action request names (the queue's own limit of a batch is far above).
MAX_ACTION_IDS = 10_000


class QueueFilter(BaseModel):
    """Which messages: every criterion given must hold (see docs/queue.md)."""

    sender: str | None = Field(None, max_length=320)
    recipient: str | None = Field(None, max_length=320)
    domain: str | None = Field(None, max_length=253)
    older_than: str | None = Field(None, max_length=20, description="e.g. 90s, 30m, 12h, 3d, 1w")
    state: RecipientState | None = None
    held: bool | None = None
    which: Literal["all", "local", "remote", "todo"] = "all"


class BrowseItem(BaseModel):
    id: str
    date: str
    age_seconds: int
    age: str
    size: int
    sender: str
    status: str
    held: bool
    hold_reason: str | None = None
    client_ip: str | None = None
    auth_user: str | None = None
    recipients: list[RecipientView]


class BrowsePage(BaseModel):
    total: int
    offset: int
    limit: int
    messages: list[BrowseItem]


class ActionRequest(BaseModel):
    """An action on the messages named by `ids`, or picked by `filter`, or both (the ids the
    filter keeps). The page's form sends the filter's fields as `filter.NAME`."""

    action: QueueAction
    ids: list[Annotated[str, Field(pattern=r"^[0-9]{1,20}$")]] = Field(
        default_factory=list, max_length=MAX_ACTION_IDS)
    filter: QueueFilter | None = None
    reason: str | None = Field(None, max_length=200)

    @model_validator(mode="before")
    @classmethod
    def _dotted_filter(cls, data: Any) -> Any:
        if isinstance(data, dict) and any(isinstance(k, str) and k.startswith("filter.")
                                          for k in data):
            data = dict(data)
            given = {k[7:]: v for k, v in data.items()
                     if isinstance(k, str) and k.startswith("filter.") and v not in ("", None)}
            for key in [k for k in data if isinstance(k, str) and k.startswith("filter.")]:
                data.pop(key)
            data.setdefault("filter", given)
        return data


class ActionOutcome(BaseModel):
    action: str
    ids: list[str]
    count: int
    missing: list[str]
    via: str
    done: bool


def _make_filter(admin: Any, f: QueueFilter, field_prefix: str = "") -> Any:
    try:
        return queue_select.make_filter(sender=f.sender, recipient=f.recipient, domain=f.domain,
                                  older_than=f.older_than, state=f.state, held=f.held,
                                  which=f.which)
    except admin.QueueError as exc:
        raise Refused(f"{field_prefix}older_than", f.older_than, str(exc)) from None


@router.get("/browse", response_model=BrowsePage, responses=errors(503))
def browse(request: Request, _who: Caller, sender: str | None = Query(None, max_length=320),
           recipient: str | None = Query(None, max_length=320),
           domain: str | None = Query(None, max_length=253),
           older_than: str | None = Query(None, max_length=20),
           state: RecipientState | None = None, held: bool | None = None,
           which: Literal["all", "local", "remote", "todo"] = "all",
           offset: int = Query(0, ge=0, le=10_000_000),
           limit: int = Query(queue_view.PAGE_SIZE, ge=1, le=500)) -> Any:
    """One page of the queued messages the filter picks, oldest first, with each recipient's
    state, attempts, last reply and next retry, and how many messages match in all."""
    admin = _admin()
    f = _make_filter(admin, QueueFilter(sender=sender, recipient=recipient, domain=domain,
                                        older_than=older_than, state=state, held=held,
                                        which=which))
    try:
        return queue_view.browse(home_of(request), f, offset, limit)
    except queue_view.QueueRefused as exc:
        raise Refused("query", {"offset": offset, "limit": limit}, str(exc)) from None
    except queue_view.QueueUnavailable as exc:
        raise HTTPException(503, str(exc)) from None


@router.post("/actions", response_model=ActionOutcome, responses=errors(404, 503))
def actions(body: ActionRequest, request: Request, _who: Caller) -> Any:
    """Hold, release, retry now, bounce now (a DSN to the sender) or delete the messages
    named by `ids` and/or picked by `filter`; with neither, nothing is done (422)."""
    admin = _admin()
    f = _make_filter(admin, body.filter, "filter.") if body.filter is not None else None
    if not body.ids and (f is None or f.empty()):
        raise Refused("ids", body.ids, "name the messages: give queue ids or a filter "
                      "(an action on the whole queue is a purge)")
    try:
        return queue_view.act(home_of(request), body.action, body.ids, f, body.reason)
    except queue_view.QueueRefused as exc:
        raise HTTPException(404, str(exc)) from None
    except queue_view.QueueUnavailable as exc:
        raise HTTPException(503, str(exc)) from None


# The filter fields of the Mail Queue page's address (and form), as the API names them.
PAGE_FILTER_FIELDS = ("sender", "recipient", "domain", "older_than", "state", "held")


def page_context(request: Request, which: str) -> dict[str, Any]:
    """What the Mail Queue page's message list needs: the filter from the address, one page
    of messages with their recipients' states, and the paging links' numbers. A refused
    filter value is shown on the page, never answered with an error page."""
    params = request.query_params
    given = {k: params.get(k, "").strip()[:320] for k in PAGE_FILTER_FIELDS}
    held = {"yes": True, "no": False}.get(given["held"])
    state = given["state"] if given["state"] in ("pending", "deferred", "done", "failed") \
        else None
    try:
        number = max(1, min(int(params.get("page", "1") or 1), 1_000_000))
    except ValueError:
        number = 1
    context: dict[str, Any] = {"queue_filter": given, "filter_problem": "",
                               "page_number": number, "page_count": 1, "match_total": 0,
                               "messages": [], "filter_query": "", "filter_fields": {}}
    if optional.load(queue_view.ADMIN) is None:
        return context
    admin = _admin()
    try:
        f = _make_filter(admin, QueueFilter.model_validate(dict(
            sender=given["sender"] or None, recipient=given["recipient"] or None,
            domain=given["domain"] or None, older_than=given["older_than"] or None,
            state=state, held=held, which=queue_view.LIST_CHOICES[which])))
    except Refused as exc:
        context["filter_problem"] = exc.reason
        return context
    size = queue_view.PAGE_SIZE
    try:
        found = queue_view.browse(home_of(request), f, (number - 1) * size, size)
    except (queue_view.QueueRefused, queue_view.QueueUnavailable) as exc:
        context["filter_problem"] = str(exc)
        return context
    kept = {k: v for k, v in given.items() if v} | {"which": which}
    context.update(messages=found["messages"], match_total=found["total"],
                   page_count=max(1, -(-found["total"] // size)), filter_query=urlencode(kept),
                   filter_fields={f"filter.{k}": _form_value(v) for k, v in f.to_dict().items()
                                  if k != "which" or v != "all"} if not f.empty() else {})
    return context


def _form_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
