"""API: the node's domains, mailboxes and aliases (add, change, delete), as the CLI does them."""

from __future__ import annotations

import logging
from dataclasses import asdict
from typing import Any, Literal

from fastapi import APIRouter, HTTPException, Request
from pydantic import BaseModel, Field

from .. import usage
from ..delivery.quota_warning import WARN_PERCENT
from ..home import Home
from ..services import helper
from ..store import accounts
from ..store.models import SPAM_ACTIONS
from . import usage_view
from .problems import Refused, errors
from .security import Caller, home_of

router = APIRouter(tags=["accounts"])
log = logging.getLogger("mailyard.panel.accounts")

SpamAction = Literal[SPAM_ACTIONS]  # type: ignore[valid-type]  # the model's one list of choices


class DomainView(BaseModel):
    name: str
    owner: str
    mailboxes: int


# ---- editing owner, quota and active state (issue 19.4): the bounds are accounts' own ----
_QUOTA_BOUNDS: dict[str, Any] = {"minimum": 0, "maximum": accounts.MAX_QUOTA_MB}


class DomainChange(BaseModel):
    owner: str | None = Field(None, max_length=accounts.MAX_OWNER_LENGTH,
                              description="unix user owning the domain (xuser); '' for none")


class DomainUsageView(BaseModel):
    name: str
    mailboxes: int
    used_bytes: int
    quota_mb: int
    unlimited: int


class DomainIn(BaseModel):
    name: str = Field(max_length=253)
    owner: str = Field("", max_length=32, description="unix user owning the domain (xuser)")


class MailboxView(BaseModel):
    address: str
    active: bool
    quota_mb: int
    used_bytes: int | None = Field(None, description="bytes in use; null when not readable")
    percent: float | None = Field(None, description="of the quota; null without one")
    spam_action: str
    messages_per_hour: int | None = Field(
        None, description="its own outbound limit, messages per hour (0: none); null: the "
                          "node's limits.messages_per_hour")


class MailboxIn(BaseModel):
    address: str = Field(max_length=320)
    password: str = Field(min_length=1, max_length=1024)
    quota_mb: int = Field(0, description=accounts.QUOTA_ALLOWED, json_schema_extra=_QUOTA_BOUNDS)


class MailboxChange(BaseModel):
    quota_mb: int | None = Field(None, description=accounts.QUOTA_ALLOWED,
                                 json_schema_extra=_QUOTA_BOUNDS)
    active: bool | None = Field(None, description="false: refused at RCPT, no login")
    password: str | None = Field(None, min_length=1, max_length=1024)
    spam_action: SpamAction | None = None
    messages_per_hour: int | None = Field(
        None, ge=0, le=accounts.MAX_MESSAGES_PER_HOUR,
        description="its own outbound limit (0: none); null puts it back on the node's "
                    "limits.messages_per_hour; absent: unchanged")


class AliasView(BaseModel):
    source: str
    targets: list[str]
    keep_copy: bool


class AliasIn(BaseModel):
    source: str = Field(max_length=320)
    targets: list[str] = Field(min_length=1, max_length=1000)
    keep_copy: bool = False


class AliasChange(BaseModel):
    targets: list[str] = Field(min_length=1, max_length=1000)
    keep_copy: bool = False


def _refuse(field: str, value: Any, exc: accounts.AccountError) -> Refused:
    return Refused(field, value, str(exc))


def _missing(exc: accounts.AccountError) -> bool:
    return str(exc).startswith("no ")


def _with_usage(box: accounts.MailboxInfo, use: usage.MailboxUsage | None) -> dict[str, Any]:
    if use is None:
        return asdict(box)
    return {**asdict(box), "used_bytes": use.used_bytes, "percent": use.percent}


def _check_quota(quota_mb: int) -> None:
    """accounts' own check of a quota, refused as the field quota_mb with what is allowed."""
    try:
        accounts.check_quota(quota_mb)
    except accounts.AccountError:
        raise Refused("quota_mb", quota_mb, accounts.QUOTA_ALLOWED) from None


def account_usage(home: Any) -> dict[str, Any]:
    """What the Accounts page shows of usage: per mailbox and per domain, the threshold of the
    warning, and how sizes are written."""
    uses = usage_view.mailboxes(home)
    return {"mailbox_usage": {u.address: u for u in uses},
            "domain_usage": {d.name: d for d in usage_view.domains(home, uses)},
            "warn_percent": WARN_PERCENT, "human_bytes": usage.human_bytes}
def make_maildir(home: Home, address: str) -> None:
    """The Maildir is made by the root helper as the mail owner (mail/ is the mail owner's).
    Without the helper the mailbox still works: delivery makes its Maildir with the first
    message."""
    try:
        helper.call(home, "make-maildir", address=address)
    except helper.HelperError as exc:
        log.warning("the Maildir of %s is made at its first delivery: %s", address, exc)


# ---- domains --------------------------------------------------------------------------------


@router.get("/domains", response_model=list[DomainView], responses=errors())
def list_domains(request: Request, _who: Caller) -> Any:
    return accounts.list_domains(home_of(request))


@router.post("/domains", response_model=DomainView, status_code=201, responses=errors(422))
def add_domain(body: DomainIn, request: Request,
               _who: Caller) -> Any:
    home = home_of(request)
    try:
        name = accounts.add_domain(home, body.name, body.owner)
    except accounts.AccountError as exc:
        field = "owner" if str(exc).startswith("owner") else "name"
        raise _refuse(field, getattr(body, field), exc) from None
    return next(d for d in accounts.list_domains(home) if d["name"] == name)


@router.patch("/domains/{name}", response_model=DomainView, responses=errors(404, 422))
def change_domain(name: str, body: DomainChange, request: Request, _who: Caller) -> Any:
    """Change a domain's owner (domains have no active state; remove one to stop its mail)."""
    try:
        return accounts.set_domain(home_of(request), name, owner=body.owner)
    except accounts.AccountError as exc:
        if _missing(exc):
            raise HTTPException(404, str(exc)) from None
        raise Refused("owner", body.owner, accounts.OWNER_ALLOWED) from None


@router.get("/usage/domains", response_model=list[DomainUsageView], responses=errors())
def domain_usage(request: Request, _who: Caller) -> Any:
    """Per domain: its mailboxes, their bytes in use and their quotas added up."""
    return [asdict(d) for d in usage_view.domains(home_of(request))]


@router.delete("/domains/{name}", status_code=204, responses=errors(404))
def remove_domain(name: str, request: Request, _who: Caller) -> None:
    """Remove a domain with its mailboxes and aliases (the mail on disk stays)."""
    try:
        accounts.remove_domain(home_of(request), name)
    except accounts.AccountError as exc:
        raise HTTPException(404, str(exc)) from None


# ---- mailboxes ------------------------------------------------------------------------------


@router.get("/mailboxes", response_model=list[MailboxView], responses=errors())
def list_mailboxes(request: Request, _who: Caller, domain: str | None = None) -> Any:
    home = home_of(request)
    uses = {u.address: u for u in usage_view.mailboxes(home, domain)}
    rates = accounts.mailbox_rate_limits(home)
    return [{**_with_usage(m, uses.get(m.address)), "messages_per_hour": rates.get(m.address)}
            for m in accounts.list_mailboxes(home, domain)]


@router.post("/mailboxes", response_model=MailboxView, status_code=201, responses=errors(422))
def add_mailbox(body: MailboxIn, request: Request,
                _who: Caller) -> Any:
    home = home_of(request)
    _check_quota(body.quota_mb)
    try:
        address = accounts.add_mailbox(home, body.address, body.password, body.quota_mb,
                                       make_maildir=False)
    except accounts.AccountError as exc:
        field = "password" if "password" in str(exc) else "address"
        raise _refuse(field, "(hidden)" if field == "password" else body.address, exc) from None
    make_maildir(home, address)
    box = accounts.get_mailbox(home, address)
    assert box is not None
    return asdict(box)


@router.get("/mailboxes/{address}", response_model=MailboxView, responses=errors(404))
def get_mailbox(address: str, request: Request, _who: Caller) -> Any:
    box = accounts.get_mailbox(home_of(request), address)
    if box is None:
        raise HTTPException(404, f"no mailbox {address}")
    return _with_rate(home_of(request), box)


@router.patch("/mailboxes/{address}", response_model=MailboxView, responses=errors(404, 422))
def change_mailbox(address: str, body: MailboxChange, request: Request,
                   _who: Caller) -> Any:
    """Change a mailbox's password, where its spam goes, its quota or whether it is active;
    a refused value changes nothing."""
    home = home_of(request)
    if accounts.get_mailbox(home, address) is None:
        raise HTTPException(404, f"no mailbox {address}")
    # quota and active state: checked before anything else is changed
    if body.quota_mb is not None:
        _check_quota(body.quota_mb)
    try:
        if body.password is not None:
            accounts.set_password(home, address, body.password)
        if body.spam_action is not None:
            accounts.set_spam_action(home, address, body.spam_action)
    except accounts.AccountError as exc:
        raise _refuse("password" if "password" in str(exc) else "spam_action",
                      "(hidden)" if "password" in str(exc) else body.spam_action, exc) from None
    if body.quota_mb is not None or body.active is not None:  # last: already checked above
        accounts.set_mailbox(home, address, quota_mb=body.quota_mb, active=body.active)
    if "messages_per_hour" in body.model_fields_set:  # null: back to the node's limit
        value = body.messages_per_hour
        found = accounts.get_mailbox(home, address)  # its stored spelling
        assert found is not None
        accounts.set_mailbox(home, found.address, messages_per_hour=accounts.CLEAR_RATE_LIMIT
                             if value is None else value)
    box = accounts.get_mailbox(home, address)
    assert box is not None
    return _with_rate(home, box)


@router.delete("/mailboxes/{address}", status_code=204, responses=errors(404))
def remove_mailbox(address: str, request: Request,
                   _who: Caller) -> None:
    """Remove a mailbox account (its mail stays on disk)."""
    try:
        accounts.remove_mailbox(home_of(request), address)
    except accounts.AccountError as exc:
        raise HTTPException(404, str(exc)) from None


# ---- aliases --------------------------------------------------------------------------------


@router.get("/aliases", response_model=list[AliasView], responses=errors())
def list_aliases(request: Request, _who: Caller) -> Any:
    return [asdict(a) for a in accounts.list_aliases(home_of(request))]


@router.post("/aliases", response_model=AliasView, status_code=201, responses=errors(422))
def add_alias(body: AliasIn, request: Request, _who: Caller) -> Any:
    home = home_of(request)
    try:
        source = accounts.add_alias(home, body.source, body.targets, body.keep_copy)
    except accounts.AccountError as exc:
        field = "source" if body.source.lower() in str(exc).lower() else "targets"
        raise _refuse(field, getattr(body, field), exc) from None
    alias = accounts.get_alias(home, source)
    assert alias is not None
    return asdict(alias)


@router.put("/aliases/{source}", response_model=AliasView, responses=errors(404, 422))
def change_alias(source: str, body: AliasChange, request: Request,
                 _who: Caller) -> Any:
    """Replace an alias's targets; a refused change leaves the alias as it was."""
    home = home_of(request)
    old = accounts.get_alias(home, source)
    if old is None:
        raise HTTPException(404, f"no alias {source}")
    try:
        accounts.update_alias(home, old.source, body.targets, body.keep_copy)
    except accounts.AccountError as exc:
        raise _refuse("targets", body.targets, exc) from None
    alias = accounts.get_alias(home, old.source)
    assert alias is not None
    return asdict(alias)


@router.delete("/aliases/{source}", status_code=204, responses=errors(404))
def remove_alias(source: str, request: Request, _who: Caller) -> None:
    try:
        accounts.remove_alias(home_of(request), source)
    except accounts.AccountError as exc:
        raise HTTPException(404, str(exc)) from None


# ---- a mailbox's own outbound limit (issue 19, item 3) ------------------------------------------


def _with_rate(home: Any, box: accounts.MailboxInfo) -> dict[str, Any]:
    """The mailbox as the API shows it (its usage too), with its own messages-per-hour limit."""
    return {**_with_usage(box, usage_view.mailbox(home, box.address)),
            "messages_per_hour": accounts.mailbox_rate_limit(home, box.address)}
