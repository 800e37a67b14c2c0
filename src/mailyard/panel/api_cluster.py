"""API: the cluster: its nodes, recent cascaded setting changes, and cascaded actions."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Literal

from fastapi import APIRouter, HTTPException, Query, Request
from pydantic import BaseModel, Field

from ..cluster import actions
from ..cluster.changes import RECENT_CHANGES, changes_report
from ..cluster.membership import ClusterError, list_nodes
from .api_services import ServiceName
from .problems import Refused, errors
from .security import Caller, home_of

router = APIRouter(prefix="/cluster", tags=["cluster"])

# Most changes one request lists: a page's worth; older ones are in the store.
MAX_CHANGES = 200


class ClusterNodeView(BaseModel):
    name: str
    role: Literal["manager", "member"]
    address: str
    port_base: int
    version: str
    last_seen: datetime | None
    seconds_since_seen: int | None
    reachable: bool = Field(description="reported within the last three heartbeats")
    services: dict[str, str] = Field(description="each service's state as the node last "
                                                 "reported it")


class NodeChangeOutcome(BaseModel):
    node: str
    state: Literal["applied", "failed", "pending", "n/a"]
    error: str
    at: datetime | None


class ClusterChangeView(BaseModel):
    id: int
    key: str
    value: str
    origin: str
    created_at: datetime | None
    nodes: list[NodeChangeOutcome]


# The one list of actions is mailyard.cluster.actions.KINDS.
CascadeKind = StrEnum("CascadeKind", {k.replace(".", "_"): k  # type: ignore[misc]
                                      for k in actions.KINDS})


class CascadeRequest(BaseModel):
    action: CascadeKind
    service: ServiceName | None = Field(
        None, description="the service, for service.start, service.stop, service.restart")
    queues: list[Literal["remote", "local", "todo", "all"]] | None = Field(
        None, min_length=1, max_length=4, description="the queues to purge, for queue.purge")


class CascadeOutcome(BaseModel):
    node: str
    address: str
    state: Literal["done", "failed", "unreachable"]
    detail: str


class CascadeReport(BaseModel):
    action: str = Field(description="the action as it reads in messages")
    ok: bool = Field(description="true when every node is done")
    outcomes: list[CascadeOutcome]


@router.get("/nodes", response_model=list[ClusterNodeView], responses=errors())
def nodes(request: Request, _who: Caller) -> list[ClusterNodeView]:
    """Every node of the cluster, manager first: address, version, last contact, services
    (an empty list on a node that is not in a cluster)."""
    return [ClusterNodeView(**row) for row in list_nodes(home_of(request))]


@router.get("/changes", response_model=list[ClusterChangeView], responses=errors())
def changes(request: Request, _who: Caller,
            limit: Annotated[int, Query(ge=1, le=MAX_CHANGES)] = RECENT_CHANGES
            ) -> list[ClusterChangeView]:
    """The most recent cascaded setting changes, newest first, with each node's outcome."""
    return [ClusterChangeView(**change) for change in changes_report(home_of(request), limit)]


@router.post("/actions", response_model=CascadeReport, responses=errors(409))
def cascade(body: CascadeRequest, request: Request, _who: Caller) -> CascadeReport:
    """Run a service or queue action on every node of the cluster, from the manager; the
    answer has each node's outcome (done, failed or unreachable), also when some failed."""
    try:
        action = actions.Action(body.action.value, body.service.value if body.service else "",
                                tuple(body.queues or ()))
    except actions.ActionError as exc:
        raise Refused(exc.field, exc.value, exc.reason) from None
    try:
        outcomes = actions.run_everywhere(home_of(request), action)
    except ClusterError as exc:
        raise HTTPException(409, str(exc)) from None
    return CascadeReport(action=action.label, ok=actions.all_done(outcomes),
                         outcomes=[CascadeOutcome.model_validate(o.as_dict()) for o in outcomes])
