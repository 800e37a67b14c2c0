"""API: SpamAssassin's advanced preferences (the guide's custom options table): list, add,
edit, delete and bulk delete, through mailyard.filters.prefs, which validates them."""

from __future__ import annotations

import logging
from dataclasses import asdict, is_dataclass
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, HTTPException, Request
from pydantic import BaseModel, Field

from ..services import helper
from . import optional
from .problems import Refused, errors
from .security import Caller, home_of

if TYPE_CHECKING:
    from ..home import Home

router = APIRouter(prefix="/spam", tags=["spam"])
PREFS = "mailyard.filters.prefs"
log = logging.getLogger("mailyard.panel.spam")


class Preference(BaseModel):
    id: int
    preference: str
    scope: str
    value: str


class PreferenceIn(BaseModel):
    preference: str = Field(max_length=64)
    value: str = Field(max_length=1000)
    scope: str = Field("global", max_length=330,
                       description="global, domain:NAME or mailbox:ADDRESS")


class PreferenceIds(BaseModel):
    ids: list[int] = Field(max_length=10000)


def _row(item: Any) -> dict[str, Any]:
    if is_dataclass(item) and not isinstance(item, type):
        data = asdict(item)
    else:
        data = dict(item) if isinstance(item, dict) else vars(item)
    return {"id": int(data["id"]), "preference": str(data["preference"]),
            "scope": str(data.get("scope") or "global"), "value": str(data["value"])}


def preference_rows(home: Home) -> list[dict[str, Any]]:
    prefs = optional.load(PREFS)
    if prefs is None:
        return []
    return [_row(p) for p in prefs.list_preferences(home)]


def preference_names() -> list[str]:
    prefs = optional.load(PREFS)
    return sorted(prefs.ALLOWED) if prefs is not None else []


def preference_examples() -> dict[str, str]:
    """An example value of each allowed preference, for the add form's menu."""
    prefs = optional.load(PREFS)
    return {name: a.example for name, a in sorted(prefs.ALLOWED.items())} if prefs else {}


def render_spamd(home: Home, global_changed: bool) -> None:
    """spamd's files are rendered by the root helper (site config in root's etc/, user_prefs
    of the mail owner's); the preference is stored either way and rendered at spamd's next
    start when the helper does not answer."""
    try:
        helper.call(home, "spam-render", global_changed=global_changed)
    except helper.HelperError as exc:
        log.warning("spam preferences are rendered when spamd next starts: %s", exc)


def _refusal(exc: Exception, body: PreferenceIn) -> Refused:
    """PreferenceError says in words what was wrong; pick the field it is about."""
    text = str(exc)
    if text.startswith("scope"):
        return Refused("scope", body.scope, text)
    if text.startswith("preference") or "preference name" in text:
        return Refused("preference", body.preference, text)
    return Refused("value", body.value, text)


@router.get("/preferences", response_model=list[Preference], responses=errors(503))
def list_preferences(request: Request, _who: Caller) -> list[Any]:
    optional.require(PREFS)
    return preference_rows(home_of(request))


@router.get("/preference-names", response_model=list[str], responses=errors(503))
def list_names(_who: Caller) -> list[str]:
    """The preferences that may be set (anything else is refused)."""
    optional.require(PREFS)
    return preference_names()


@router.post("/preferences", response_model=Preference, status_code=201,
             responses=errors(422, 503))
def add_preference(body: PreferenceIn, request: Request,
                   _who: Caller) -> Any:
    prefs = optional.require(PREFS)
    try:
        made = prefs.add_preference(home_of(request), body.scope, body.preference, body.value,
                                    render=False)
    except prefs.PreferenceError as exc:
        raise _refusal(exc, body) from None
    render_spamd(home_of(request), _row(made)["scope"] == "global")
    return _row(made)


@router.put("/preferences/{pref_id}", response_model=Preference, responses=errors(404, 422, 503))
def edit_preference(pref_id: int, body: PreferenceIn, request: Request,
                    _who: Caller) -> Any:
    prefs = optional.require(PREFS)
    home = home_of(request)
    rows = {r["id"]: r for r in preference_rows(home)}
    if pref_id not in rows:
        raise HTTPException(404, f"no preference with id {pref_id}")
    try:
        changed = prefs.edit_preference(home, pref_id, body.value, body.preference, body.scope,
                                        render=False)
    except prefs.PreferenceError as exc:
        raise _refusal(exc, body) from None
    render_spamd(home, "global" in (rows[pref_id]["scope"], _row(changed)["scope"]))
    return _row(changed)


@router.delete("/preferences/{pref_id}", status_code=204, responses=errors(404, 503))
def delete_preference(pref_id: int, request: Request,
                      _who: Caller) -> None:
    prefs = optional.require(PREFS)
    home = home_of(request)
    if pref_id not in {r["id"] for r in preference_rows(home)}:
        raise HTTPException(404, f"no preference with id {pref_id}")
    was_global = next(r for r in preference_rows(home) if r["id"] == pref_id)["scope"] == "global"
    prefs.delete_preference(home, pref_id, render=False)
    render_spamd(home, was_global)


class Deleted(BaseModel):
    deleted: list[int]


@router.post("/preferences/delete", response_model=Deleted, responses=errors(503))
def delete_preferences(body: PreferenceIds, request: Request,
                       _who: Caller) -> Deleted:
    """Delete several preferences at once (the table's "With Selected: Delete")."""
    prefs = optional.require(PREFS)
    home = home_of(request)
    present = {r["id"]: r for r in preference_rows(home)}
    gone = [i for i in dict.fromkeys(body.ids) if i in present]
    for pref_id in gone:
        prefs.delete_preference(home, pref_id, render=False)
    if gone:
        render_spamd(home, any(present[i]["scope"] == "global" for i in gone))
    return Deleted(deleted=gone)
