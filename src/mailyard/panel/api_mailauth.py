"""API: each domain's DKIM keys, the DNS records it should publish, and their live check."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, Request
from pydantic import BaseModel

from ..mailauth import service
from ..mailauth.dnscheck import passed
from ..mailauth.records import zone_text
from ..store import dkim_keys
from .problems import errors
from .security import Caller, home_of

router = APIRouter(tags=["mail authentication"])


class RecordView(BaseModel):
    kind: str
    name: str
    type: str
    value: str
    required: bool
    note: str
    zone_line: str


class RecordsView(BaseModel):
    domain: str
    records: list[RecordView]
    zone: str


class FindingView(BaseModel):
    kind: str
    name: str
    state: str
    published: str
    detail: str
    required: bool


class CheckView(BaseModel):
    domain: str
    passed: bool
    findings: list[FindingView]


class KeyView(BaseModel):
    selector: str
    algorithm: str
    active: bool
    created_at: Any
    retired_at: Any


def records_view(request: Request, domain: str) -> dict[str, Any]:
    try:
        records = service.domain_records(home_of(request), domain)
    except service.NotLocal as exc:
        raise HTTPException(404, str(exc)) from None
    return {"domain": domain.lower(), "zone": zone_text(records),
            "records": [{"kind": r.kind, "name": r.name, "type": r.rtype, "value": r.value,
                         "required": r.required, "note": r.note, "zone_line": r.zone_line()}
                        for r in records]}


def check_view(request: Request, domain: str) -> dict[str, Any]:
    try:
        findings = service.check(home_of(request), domain)
    except service.NotLocal as exc:
        raise HTTPException(404, str(exc)) from None
    except ValueError as exc:
        raise HTTPException(409, f"smtp.dns_resolver cannot be used: {exc}") from None
    return {"domain": domain.lower(), "passed": passed(findings),
            "findings": [f.__dict__ for f in findings]}


@router.get("/dns/{domain}/records", response_model=RecordsView, responses=errors(404))
def get_records(domain: str, request: Request, _who: Caller) -> Any:
    """The records `domain` should publish, each as a zone-file line too."""
    return records_view(request, domain)


@router.get("/dns/{domain}/check", response_model=CheckView, responses=errors(404, 409))
def get_check(domain: str, request: Request, _who: Caller) -> Any:
    """What DNS publishes for `domain`, record by record: ok, missing, wrong or warning."""
    return check_view(request, domain)


@router.get("/dkim/{domain}/keys", response_model=list[KeyView], responses=errors(404))
def get_keys(domain: str, request: Request, _who: Caller) -> Any:
    try:
        return [k.__dict__ for k in dkim_keys.list_keys(home_of(request), domain)]
    except dkim_keys.DkimKeyError as exc:
        raise HTTPException(404, str(exc)) from None


@router.post("/dkim/{domain}/rotate", response_model=list[str], responses=errors(404))
def rotate_keys(domain: str, request: Request, _who: Caller) -> Any:
    """New keys under new selectors; the old ones stop signing and stay listed."""
    try:
        return dkim_keys.rotate(home_of(request), domain)
    except dkim_keys.DkimKeyError as exc:
        raise HTTPException(404, str(exc)) from None
