"""API: the node's domains, mailboxes and aliases (add, change, delete), as the CLI does them."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any, Literal

from fastapi import APIRouter, HTTPException, Request
from pydantic import BaseModel, Field

from ..store import accounts
from ..store.models import SPAM_ACTIONS
from .problems import Refused, errors
from .security import Caller, home_of

router = APIRouter(tags=["accounts"])

SpamAction = Literal[SPAM_ACTIONS]  # type: ignore[valid-type]  # the model's one list of choices


class DomainView(BaseModel):
    name: str
    owner: str
    mailboxes: int


class DomainIn(BaseModel):
    name: str = Field(max_length=253)
    owner: str = Field("", max_length=32, description="unix user owning the domain (xuser)")


class MailboxView(BaseModel):
    address: str
    active: bool
    quota_mb: int
    spam_action: str


class MailboxIn(BaseModel):
    address: str = Field(max_length=320)
    password: str = Field(min_length=1, max_length=1024)
    quota_mb: int = Field(0, ge=0, le=accounts.MAX_QUOTA_MB)


class MailboxChange(BaseModel):
    password: str | None = Field(None, min_length=1, max_length=1024)
    spam_action: SpamAction | None = None


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
    return [asdict(m) for m in accounts.list_mailboxes(home_of(request), domain)]


@router.post("/mailboxes", response_model=MailboxView, status_code=201, responses=errors(422))
def add_mailbox(body: MailboxIn, request: Request,
                _who: Caller) -> Any:
    home = home_of(request)
    try:
        address = accounts.add_mailbox(home, body.address, body.password, body.quota_mb)
    except accounts.AccountError as exc:
        field = "password" if "password" in str(exc) else "address"
        raise _refuse(field, "(hidden)" if field == "password" else body.address, exc) from None
    box = accounts.get_mailbox(home, address)
    assert box is not None
    return asdict(box)


@router.get("/mailboxes/{address}", response_model=MailboxView, responses=errors(404))
def get_mailbox(address: str, request: Request, _who: Caller) -> Any:
    box = accounts.get_mailbox(home_of(request), address)
    if box is None:
        raise HTTPException(404, f"no mailbox {address}")
    return asdict(box)


@router.patch("/mailboxes/{address}", response_model=MailboxView, responses=errors(404, 422))
def change_mailbox(address: str, body: MailboxChange, request: Request,
                   _who: Caller) -> Any:
    """Change a mailbox's password and/or where its spam goes."""
    home = home_of(request)
    if accounts.get_mailbox(home, address) is None:
        raise HTTPException(404, f"no mailbox {address}")
    try:
        if body.password is not None:
            accounts.set_password(home, address, body.password)
        if body.spam_action is not None:
            accounts.set_spam_action(home, address, body.spam_action)
    except accounts.AccountError as exc:
        raise _refuse("password" if "password" in str(exc) else "spam_action",
                      "(hidden)" if "password" in str(exc) else body.spam_action, exc) from None
    box = accounts.get_mailbox(home, address)
    assert box is not None
    return asdict(box)


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
