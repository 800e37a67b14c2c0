"""API: ClamAV's virus definition files (name, date, count) and Freshclam's last update."""

from __future__ import annotations

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
    version: str = ""


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
        stamp = data.get("date") or data.get("build_time") or data.get("built") or ""
        if hasattr(stamp, "strftime"):
            stamp = stamp.strftime("%d %b %Y %H:%M")
        rows.append({"file": str(data.get("file") or data.get("name") or ""),
                     "date": str(stamp),
                     "signatures": int(data.get("signatures") or data.get("count") or 0),
                     "version": str(data.get("version") or "")})
    return rows


def freshclam_status(home: Home) -> dict[str, Any]:
    freshclam = optional.load(FRESHCLAM)
    if freshclam is None or not hasattr(freshclam, "last_status"):
        return {"available": False, "text": "Freshclam status is not available on this node"}
    status = freshclam.last_status(home)
    if status is None:
        return {"available": True, "text": "no update has run yet"}
    if isinstance(status, str):
        return {"available": True, "text": status}
    data = _as_dict(status)
    parts = [f"{k.replace('_', ' ')}: {v}" for k, v in data.items() if v not in (None, "")]
    return {"available": True, "text": "; ".join(parts)}


@router.get("/definitions", response_model=list[Definition], responses=errors(503))
def definitions(request: Request, _who: Caller) -> Any:
    """Each signature file of ClamAV's database: its name, build date and signature count."""
    optional.require(VIRUSDB)
    return definition_rows(home_of(request)) or []


@router.get("/freshclam", response_model=FreshclamStatus, responses=errors())
def freshclam(request: Request, _who: Caller) -> Any:
    """What Freshclam's last run did (or that it is not available)."""
    return freshclam_status(home_of(request))
