"""The HTML pages: sign-in and sign-out, and the guide's Mail Server pages (GET only).

Pages only show; every change a page makes is a call of the JSON API (static/panel.js sends
it with the session's CSRF token), so scripts can do everything the pages do.
"""

from __future__ import annotations

import hmac
import secrets
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, FastAPI, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader

from ..cluster.changes import changes_report
from ..cluster.membership import list_nodes, manager
from ..services import control
from ..settings.registry import SERVICE_NAMES
from ..store import accounts
from ..store.health import recent_health
from ..store.models import SPAM_ACTIONS
from ..store.settings_store import load_settings
from . import api_mailauth, boxes, optional, queue_view, rrd
from .api_accounts import account_usage
from .api_queue import page_context
from .api_services import statuses
from .api_spam import preference_examples, preference_rows
from .api_tls import installed_certificates
from .api_virus import definition_rows, freshclam_status
from .problems import page_problems  # issue 19: senders over a rate limit
from .security import CSRF_FIELD, home_of, same_origin, session_of, sessions_of
from .sessions import COOKIE_NAME, SIGNIN_COOKIE_NAME, Session
from .throttle import BUSY_RETRY_SECONDS

router = APIRouter(include_in_schema=False)
HERE = Path(__file__).parent
TEMPLATES = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=True,
                        trim_blocks=True, lstrip_blocks=True)

NAV = [("mta", "MTA"), ("mda", "MDA"), ("spam", "Spam Filtering"),
       ("virus", "Virus Filtering"), ("queue", "Mail Queue"), ("accounts", "Accounts"),
       ("mailauth", "Mail Authentication"), ("cluster", "Cluster")]
NAV.append(("trail", "Delivery Trail"))  # the delivery trail (issue 19, panel/api_trail.py)


class NeedSignin(Exception):
    def __init__(self, path: str) -> None:
        self.path = path


def install(app: FastAPI) -> None:
    async def to_signin(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, NeedSignin)
        return RedirectResponse(f"/signin?next={quote(exc.path, safe='/')}", status_code=303)

    app.add_exception_handler(NeedSignin, to_signin)


def signed_in(request: Request) -> Session:
    session = session_of(request)
    if session is None:
        raise NeedSignin(request.url.path)
    return session


SignedIn = Annotated[Session, Depends(signed_in)]


def render(name: str, status: int = 200, **context: Any) -> HTMLResponse:
    return HTMLResponse(TEMPLATES.get_template(name).render(**context), status_code=status)


def _cookie(response: Response, name: str, value: str, max_age: int | None = None) -> None:
    response.set_cookie(name, value, max_age=max_age, path="/", secure=True, httponly=True,
                        samesite="strict")


# ---- sign-in and sign-out -------------------------------------------------------------------


def _safe_next(target: str | None) -> str:
    if target and target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return "/"


def _signin_form(request: Request, status: int = 200, message: str = "",
                 username: str = "", target: str = "/") -> HTMLResponse:
    token = secrets.token_urlsafe(32)
    response = render("signin.html", status, csrf=token, message=message, username=username,
                      next=_safe_next(target), hostname=_hostname(request))
    _cookie(response, SIGNIN_COOKIE_NAME, token, max_age=3600)
    return response


def _hostname(request: Request) -> str:
    return str(load_settings(home_of(request))["server.hostname"])


@router.get("/signin")
def signin_page(request: Request, next: str = "/") -> Response:
    if session_of(request):
        return RedirectResponse(_safe_next(next), status_code=303)
    return _signin_form(request, target=next)


@router.post("/signin")
def signin(request: Request, username: Annotated[str, Form()] = "",
           password: Annotated[str, Form()] = "", csrf_token: Annotated[str, Form()] = "",
           next: Annotated[str, Form()] = "/") -> Response:
    expected = request.cookies.get(SIGNIN_COOKIE_NAME, "")
    if not same_origin(request) or not expected or not hmac.compare_digest(expected, csrf_token):
        return _signin_form(request, 403, "The sign-in form had expired; please try again.",
                            username[:64], next)
    client = request.client.host if request.client else "unknown"
    throttle = request.app.state.throttle
    wait = throttle.wait_seconds(client)
    if wait > 0:
        return _signin_form(request, 429, f"Too many failed sign-ins from {client}; try again "
                            f"in {int(wait) + 1} seconds.", username[:64], next)
    with request.app.state.password_checks.slot() as may_check:
        if not may_check:  # a burst: every check slot busy (throttle.PasswordCheckGate)
            busy = _signin_form(request, 503, "Too many sign-ins at once; please try again in "
                                f"{BUSY_RETRY_SECONDS} seconds.", username[:64], next)
            busy.headers["Retry-After"] = str(BUSY_RETRY_SECONDS)
            return busy
        try:
            right = accounts.check_admin_password(home_of(request), username, password)
        except Exception:  # the store (and its cache) or argon2 failed: not the admin's fault
            return _signin_form(request, 503, "The password could not be checked just now; "
                                "please try again in a moment.", username[:64], next)
    if not right:
        throttle.failed(client)
        return _signin_form(request, 401, "Wrong user name or password.", username[:64], next)
    throttle.succeeded(client)
    session = sessions_of(request).create(username)
    response = RedirectResponse(_safe_next(next), status_code=303)
    _cookie(response, COOKIE_NAME, session.sid)
    response.delete_cookie(SIGNIN_COOKIE_NAME, path="/", secure=True, httponly=True,
                           samesite="strict")
    return response


@router.post("/signout")
def signout(request: Request, csrf_token: Annotated[str, Form()] = "") -> Response:
    session = session_of(request)
    if session is not None and same_origin(request) and session.csrf_matches(csrf_token):
        sessions_of(request).drop(session.sid)
    elif session is not None:
        return Response("CSRF check failed; sign out from the panel's own page.", 403)
    response = RedirectResponse("/signin", status_code=303)
    response.delete_cookie(COOKIE_NAME, path="/", secure=True, httponly=True, samesite="strict")
    return response


# ---- the pages ------------------------------------------------------------------------------


def _statuses(request: Request) -> dict[str, control.ServiceStatus]:
    return {s.name: s for s in statuses(home_of(request))}


def _cascades_actions(request: Request) -> bool:
    """Whether this node is the manager of a cluster, which alone cascades actions: the pages
    offer "Cascade to nodes?" on service and queue actions only then."""
    current = manager(home_of(request))
    return current is not None and current.name == home_of(request).node_name


def _base(request: Request, session: Session, page: str, title: str) -> dict[str, Any]:
    # A cluster's store may be away: the pages then show what the node works from (its local
    # cache) and offer no cascading, which needs the store.
    store = recent_health(home_of(request))
    return {"session": session, "page": page, "title": title, "nav": NAV,
            "csrf": session.csrf, "csrf_field": CSRF_FIELD, "hostname": _hostname(request),
            "node": home_of(request).node_name,
            "store_away": "" if store.reachable else store.summary(),
            "cascade_actions": store.reachable and _cascades_actions(request),
            "problems": page_problems(home_of(request))}


@router.get("/")
def index(_session: SignedIn) -> Response:
    return RedirectResponse("/mta", status_code=303)


def _boxes_page(request: Request, session: Session, page: str) -> dict[str, Any]:
    title, page_boxes = boxes.PAGES[page]
    values = load_settings(home_of(request))
    statuses = _statuses(request)
    home = home_of(request)
    shown = [{"box": box, "fields": boxes.fields_of(box, values),
              "port": home.port(box.port[1], values) if box.port else None}
             for box in page_boxes]
    return {**_base(request, session, page, title), "boxes": shown, "statuses": statuses}


@router.get("/mta")
def mta(request: Request, session: SignedIn) -> Response:
    return render("boxes.html", **_boxes_page(request, session, "mta"))


@router.get("/mda")
def mda(request: Request, session: SignedIn) -> Response:
    return render("boxes.html", **_boxes_page(request, session, "mda"))


@router.get("/spam")
def spam(request: Request, session: SignedIn) -> Response:
    context = _boxes_page(request, session, "spam")
    prefs = optional.load("mailyard.filters.prefs")
    context["prefs_available"] = prefs is not None
    context["prefs"] = preference_rows(home_of(request)) if prefs else []
    context["pref_names"] = preference_examples() if prefs else {}
    return render("spam.html", **context)


@router.get("/virus")
def virus(request: Request, session: SignedIn) -> Response:
    context = _boxes_page(request, session, "virus")
    context["definitions"] = definition_rows(home_of(request))
    context["freshclam"] = freshclam_status(home_of(request))
    return render("virus.html", **context)


@router.get("/queue")
def queue(request: Request, session: SignedIn, period: str = "day",
          which: str = "remote+local") -> Response:
    home = home_of(request)
    period = period if period in rrd.PERIODS else "day"
    which = which if which in queue_view.LIST_CHOICES else "remote+local"
    try:
        activity = rrd.summary(rrd.rrd_path(home), period)
    except rrd.RrdError:
        activity = None
    admin = optional.load(queue_view.ADMIN)
    try:  # the queue is read by the root helper as the mail owner (queue_view)
        counts = queue_view.stats(home)
    except (queue_view.QueueRefused, queue_view.QueueUnavailable):
        counts = {"todo": 0, "local": 0, "remote": 0}
    return render("queue.html", **_base(request, session, "queue", "Mail Queue"),
                  stats=counts, activity=activity, period=period,
                  periods=list(rrd.PERIODS), which=which, admin_available=admin is not None,
                  **page_context(request, which))


@router.get("/accounts")
def accounts_page(request: Request, session: SignedIn) -> Response:
    home = home_of(request)
    spam_actions = [(a, a.replace("_", " ").capitalize()) for a in SPAM_ACTIONS]
    return render("accounts.html", **_base(request, session, "accounts", "Accounts"),
                  domains=accounts.list_domains(home), mailboxes=accounts.list_mailboxes(home),
                  aliases=accounts.list_aliases(home), spam_actions=spam_actions,
                  **account_usage(home))


@router.get("/mailauth")
def mailauth_page(request: Request, session: SignedIn, check: str = "") -> Response:
    """The DKIM and DNS settings, then each domain's records; `check=DOMAIN` also shows what
    DNS publishes for that domain, record by record."""
    context = _boxes_page(request, session, "mailauth")
    home = home_of(request)
    domains = [str(d["name"]) for d in accounts.list_domains(home)]
    context["domains"] = [api_mailauth.records_view(request, d) for d in domains]
    context["checked"] = (api_mailauth.check_view(request, check) if check in domains else None)
    context["certificates"] = installed_certificates(home)
    return render("mailauth.html", **context)


@router.get("/cluster")
def cluster_page(request: Request, session: SignedIn) -> Response:
    home = home_of(request)
    base = _base(request, session, "cluster", "Cluster")
    if base["store_away"]:  # the nodes and changes live only in the store
        return render("cluster.html", **base, nodes=[], member=False, changes=[], services=[])
    nodes = list_nodes(home)
    member = any(n["name"] == home.node_name for n in nodes)
    return render("cluster.html", **base, nodes=nodes, member=member,
                  changes=changes_report(home) if member else [],
                  services=_reported_services(nodes))


def _reported_services(nodes: list[dict[str, Any]]) -> list[str]:
    """The services any node reported, in the usual order, then anything else they sent."""
    reported = {name for n in nodes for name in n["services"]}
    return [n for n in SERVICE_NAMES if n in reported] + sorted(reported - set(SERVICE_NAMES))


@router.get("/queue/message/{qid}")
def queue_message(qid: str, request: Request, session: SignedIn) -> Response:
    admin = optional.load(queue_view.ADMIN)
    detail, problem = None, ""
    if admin is None:
        problem = "Queue administration is not available on this node."
    else:
        try:
            detail = queue_view.show(home_of(request), qid)
        except (queue_view.QueueRefused, queue_view.QueueUnavailable) as exc:
            problem = str(exc)
    return render("message.html", 200 if detail else 404,
                  **_base(request, session, "queue", "Mail Queue"), detail=detail,
                  problem=problem, qid=qid)
