"""API: read and change the node's settings, validated by the registry (GET/PUT /settings)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Request
from pydantic import BaseModel, Field

from ..cluster.membership import list_nodes
from ..home import Home
from ..services import helper
from ..services.apply_settings import change_settings
from ..settings.registry import REGISTRY, Setting
from ..settings.types import Choice, Lines, SettingError
from ..store.settings_store import load_settings
from .problems import errors
from .security import Caller, home_of

router = APIRouter(prefix="/settings", tags=["settings"])

SettingValue = str | int | float | bool | list[str]


class ChoiceView(BaseModel):
    value: str
    label: str


class SettingView(BaseModel):
    key: str
    label: str
    help: str
    type: str
    allowed: str
    default: SettingValue
    value: SettingValue
    text: str = Field(description="the value as the pages and the CLI show it")
    box: str
    services: list[str]
    cascade: bool
    choices: list[ChoiceView] | None = None


# What a client may send: any JSON value; the registry decides (a list only for list settings).
AnyValue = Annotated[Any, Field(description="text as typed in the form, or a typed JSON value "
                                            "(number, true/false, list of lines)")]


class SettingChange(BaseModel):
    value: AnyValue
    cascade: bool = Field(False, description="the cluster-wide value, applied on every node; "
                                             "without it this node's own value")


class SettingsChange(BaseModel):
    values: dict[str, AnyValue] = Field(max_length=len(REGISTRY))
    cascade: bool = False


class ChangeView(BaseModel):
    values: dict[str, SettingValue]
    reloaded: list[str]
    restarted: list[str] = Field([], description="services restarted through the supervisor "
                                                 "for a setting read at start only (a port "
                                                 "or listen address)")
    problems: list[str]
    cascade: bool
    cascaded: list[str] = Field([], description="the keys stored as the cluster-wide value")
    node_only: list[str] = Field([], description="the keys stored as this node's own value: "
                                                 "without cascade every key, with it those "
                                                 "that belong to one node (its ports...)")
    nodes: list[str] = Field(description="the nodes the change is for (with cascade, the "
                                         "others apply it on their own at once)")


def view(spec: Setting, value: Any) -> SettingView:
    choices = None
    if isinstance(spec.type, Choice):
        choices = [ChoiceView(value=v, label=label) for v, label in spec.type.choices]
    return SettingView(key=spec.key, label=spec.label, help=spec.help, type=spec.type.kind,
                       allowed=spec.type.describe(), default=spec.default, value=value,
                       text=spec.format(value), box=spec.box, services=list(spec.services),
                       cascade=spec.cascade, choices=choices)


def _spec(key: str) -> Setting:
    spec = REGISTRY.get(key)
    if spec is None:
        raise HTTPException(404, f"no setting named {key!r} (GET /api/v1/settings lists them)")
    return spec


def check_shape(spec: Setting, value: Any) -> None:
    """Text, a number or true/false for every setting, a list of lines for list settings;
    nothing else (an object or null would otherwise be read as its text)."""
    if isinstance(value, list):
        if isinstance(spec.type, Lines) and all(isinstance(v, str) for v in value):
            return
    elif isinstance(value, str | int | float | bool):
        return
    raise SettingError(spec.key, value, spec.type.describe())


def apply_through_helper(home: Home, keys: list[str],
                         unchanged: frozenset[str]) -> tuple[list[str], list[str], list[str]]:
    """services.apply_settings.apply_keys, done by the root helper: the panel may not render the
    daemons' configs or signal their processes itself. The values are stored either way."""
    try:
        done = helper.call(home, "apply-settings", keys=keys, unchanged=sorted(unchanged))
    except helper.HelperUnavailable:
        return [], [], ["the node is not running: the new values take effect when it starts"]
    except helper.HelperError as exc:
        return [], [], [f"helper: {exc}"]
    return list(done["reloaded"]), list(done["restarted"]), list(done["problems"])


def apply_change(request: Request, values: dict[str, Any], cascade: bool,
                 split: bool = False) -> ChangeView:
    """The one way the pages and the API change settings: this node's value, or with `cascade`
    the cluster-wide one (services.apply_settings.change_settings). With `split` (a whole box sent with
    "Cascade to nodes?"), the keys that may be cascaded are, and those that belong to one node
    are stored as this node's value; the answer says which were which."""
    for key, value in values.items():
        check_shape(_spec(key), value)
    home = home_of(request)
    shared = {k: v for k, v in values.items() if cascade and (REGISTRY[k].cascade or not split)}
    own = {k: v for k, v in values.items() if k not in shared}
    if shared and own:
        for key, value in values.items():  # refuse before storing either part
            REGISTRY[key].parse(value)
    results = []
    if shared:
        results.append(change_settings(home, shared, cascade=True,
                                       applier=apply_through_helper))
    if own or not values:
        results.append(change_settings(home, own, cascade=False,
                                       applier=apply_through_helper))
    nodes = [home.node_name]
    if shared:  # the other nodes apply it themselves (GET `mailyard cluster changes`)
        nodes += [n["name"] for n in list_nodes(home) if n["name"] != home.node_name]
    merged: dict[str, Any] = {}
    for result in results:
        merged.update(result.values)
    return ChangeView(values=merged, reloaded=_union(r.reloaded for r in results),
                      restarted=_union(r.restarted for r in results),
                      problems=[p for r in results for p in r.problems],
                      cascade=bool(shared), cascaded=list(shared), node_only=list(own),
                      nodes=nodes)


def _union(lists: Any) -> list[str]:
    out: list[str] = []
    for names in lists:
        out += [n for n in names if n not in out]
    return out


@router.get("", response_model=list[SettingView], responses=errors())
def list_settings(request: Request, _who: Caller,
                  box: str | None = None) -> list[SettingView]:
    """Every setting with its value, label, help text and what is allowed (optionally one box)."""
    values = load_settings(home_of(request))
    return [view(spec, values[key]) for key, spec in REGISTRY.items()
            if box is None or spec.box == box]


@router.put("", response_model=ChangeView, responses=errors(404, 422))
def change_many(body: SettingsChange, request: Request,
                _who: Caller) -> ChangeView:
    """Change several settings at once: all are stored, or (on the first refusal) none. With
    `cascade`, the settings that may be cascaded become the cluster-wide values and those
    that belong to one node (its ports, its listen address) stay this node's own; the
    answer lists both (`cascaded`, `node_only`), as the panel's boxes need."""
    return apply_change(request, dict(body.values), body.cascade, split=True)


@router.get("/{key}", response_model=SettingView, responses=errors(404))
def get_setting(key: str, request: Request,
                _who: Caller) -> SettingView:
    spec = _spec(key)
    return view(spec, load_settings(home_of(request))[key])


@router.put("/{key}", response_model=ChangeView, responses=errors(404, 422))
def put_setting(key: str, body: SettingChange, request: Request,
                _who: Caller) -> ChangeView:
    """Change one setting; a refused value answers 422 with the field, value and reason."""
    return apply_change(request, {key: body.value}, body.cascade)
