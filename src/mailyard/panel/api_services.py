"""API: the node's services: status, version, and start / stop / restart."""

from __future__ import annotations

from enum import Enum, StrEnum

from fastapi import APIRouter, HTTPException, Request
from pydantic import BaseModel

from ..home import Home
from ..services import control, helper
from ..services.catalog import SERVICES
from ..settings.registry import SERVICE_NAMES
from ..store.settings_store import load_settings
from .problems import errors
from .security import Caller, home_of

router = APIRouter(prefix="/services", tags=["services"])

ServiceName = Enum("ServiceName", {n: n for n in SERVICE_NAMES}, type=str)  # type: ignore[misc]


class Action(StrEnum):
    start = "start"
    stop = "stop"
    restart = "restart"


class ServiceView(BaseModel):
    name: str
    state: str
    pid: int | None
    uptime: int
    version: str
    description: str
    start_on_boot: bool
    auto_restart: bool


def statuses(home: Home, with_versions: bool = True) -> list[control.ServiceStatus]:
    """Every service's state, as the root helper reads it (Dovecot's master pid file is
    root's); every service STOPPED when the node, and with it the helper, is not running."""
    try:
        rows = helper.call(home, "status", with_versions=with_versions)
    except helper.HelperUnavailable:
        return [control.ServiceStatus(name, "STOPPED", None, 0, "",
                                      SERVICES[name].description) for name in SERVICE_NAMES]
    except helper.HelperError as exc:
        raise HTTPException(503, str(exc)) from None
    return [control.ServiceStatus(**row) for row in rows]


def service_views(request: Request, with_versions: bool = True) -> list[ServiceView]:
    home = home_of(request)
    settings = load_settings(home)
    return [ServiceView(name=s.name, state=s.state, pid=s.pid, uptime=s.uptime,
                        version=s.version, description=s.description,
                        start_on_boot=bool(settings[f"service.{s.name}.start_on_boot"]),
                        auto_restart=bool(settings[f"service.{s.name}.auto_restart"]))
            for s in statuses(home, with_versions=with_versions)]


@router.get("", response_model=list[ServiceView], responses=errors())
def list_services(request: Request, _who: Caller) -> list[ServiceView]:
    """Every service: state (RUNNING, STARTING, STOPPED, FATAL), pid, uptime, version."""
    return service_views(request)


@router.get("/{name}", response_model=ServiceView, responses=errors(404))
def get_service(name: ServiceName, request: Request,
                _who: Caller) -> ServiceView:
    return next(v for v in service_views(request) if v.name == name.value)


@router.post("/{name}/{action}", response_model=ServiceView, responses=errors(404, 409))
def act(name: ServiceName, action: Action, request: Request,
        _who: Caller) -> ServiceView:
    """Start, stop or restart one service (as `mailyard service ACTION NAME`)."""
    if name.value == "panel" and action is not Action.start:
        raise HTTPException(409, "the panel cannot stop or restart itself; use "
                            f"`mailyard service {action.value} panel` on the node")
    home = home_of(request)
    try:  # as root, by the helper: Dovecot's hooks and the daemons' configs are root's
        helper.call(home, "service", action=action.value, name=name.value)
    except helper.HelperError as exc:
        raise HTTPException(409, str(exc)) from None
    return next(v for v in service_views(request, with_versions=False) if v.name == name.value)
