"""API: the outbound rate limits, every sender's count of the last hour and the senders
refused (the same report as `mailyard limits --json`; docs/limits.md)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, Request
from pydantic import BaseModel

from . import limits_view
from .problems import errors
from .security import Caller, home_of

router = APIRouter(prefix="/limits", tags=["limits"])


class LimitsView(BaseModel):
    messages_per_hour: int
    recipients_per_hour: int
    domain_messages_per_hour: int
    hold_when_over: bool


class SenderView(BaseModel):
    key: str
    messages: int
    recipients: int
    messages_limit: int
    recipients_limit: int
    refused_rule: str
    refused_at: float


class LimitsReport(BaseModel):
    limits: LimitsView
    senders: list[SenderView]


@router.get("", response_model=LimitsReport, responses=errors(503))
def limits_report(request: Request, _who: Caller) -> Any:
    """The node's limits (0: none) and each sender or domain counted or refused in the last
    hour, those refused first."""
    try:
        return limits_view.limits_report(home_of(request))
    except limits_view.LimitsUnavailable as exc:
        raise HTTPException(503, str(exc)) from None
