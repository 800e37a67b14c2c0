"""API: ClamAV's virus definition files (name, date, count) and Freshclam's last update."""

from __future__ import annotations

import time
from dataclasses import asdict, is_dataclass
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Request
from pydantic import BaseModel

from . import optional
from .problems import errors
from .security import Caller, home_of

if TYPE_CHECKING:
    from ..home import Home

router = APIRouter(prefix="/virus", tags=["virus"])
VIRUSDB = "mailyard.filters.virusdb"
FRESHCLAM = "mailyard.filters.freshclam"


class Definition(BaseModel):
    file: str
    date: str
    signatures: int
    kind: str = ""
    note: str = ""


class FreshclamStatus(BaseModel):
    available: bool
    text: str


def _as_dict(item: Any) -> dict[str, Any]:
    if is_dataclass(item) and not isinstance(item, type):
        return asdict(item)
    if isinstance(item, dict):
        return dict(item)
    return dict(vars(item))


def definition_rows(home: Home) -> list[dict[str, Any]] | None:
    """The table of definition files, or None when the virus part is not installed."""
    virusdb = optional.load(VIRUSDB)
    if virusdb is None:
        return None
    rows = []
    for item in virusdb.definitions(home):
        data = _as_dict(item)
        rows.append({"file": str(data.get("file", "")),
                     "date": str(data.get("build_date") or data.get("date") or ""),
                     "signatures": int(data.get("signatures") or 0),
                     "kind": str(data.get("kind", "")), "note": str(data.get("note", ""))})
    return rows


def freshclam_status(home: Home) -> dict[str, Any]:
    freshclam = optional.load(FRESHCLAM)
    if freshclam is None or not hasattr(freshclam, "last_status"):
        return {"available": False, "text": "Freshclam status is not available on this node"}
    status = freshclam.last_status(home)
    if not status:
        return {"available": True, "text": "no update has run on this node yet"}
    when = status.get("time")
    stamp = (time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(float(when)))
             if isinstance(when, int | float) else "at an unknown time")
    outcome = "succeeded" if status.get("ok") else "failed"
    text = f"{stamp}: {outcome}: {status.get('message', '')}"
    detail = str(status.get("detail") or "")
    if detail and detail not in text:
        text += f" ({detail})"
    return {"available": True, "text": text}


@router.get("/definitions", response_model=list[Definition], responses=errors(503))
def definitions(request: Request, _who: Caller) -> Any:
    """Each signature file of ClamAV's database: its name, build date and signature count."""
    optional.require(VIRUSDB)
    return definition_rows(home_of(request)) or []


@router.get("/freshclam", response_model=FreshclamStatus, responses=errors())
def freshclam(request: Request, _who: Caller) -> Any:
    """What Freshclam's last run did (or that it is not available)."""
    return freshclam_status(home_of(request))
