"""API: the node's TLS certificates: list them, install one (as `mailyard tls install`).

tls/ is root's and the keys in it are root's alone (0600), so the panel, which runs as
mailyard-panel, hands both to the root helper; the PEM texts travel in the request, never a
path the helper would open for the caller.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from pydantic import BaseModel, Field

from ..home import Home
from ..services import helper
from ..services.certificates import Installed
from .problems import Refused, errors
from .security import Caller, home_of

router = APIRouter(prefix="/tls", tags=["tls"])

# A PEM chain of a few certificates, or one key: well below what the helper takes.
MAX_PEM_CHARACTERS = 64 * 1024


class CertificateView(BaseModel):
    name: str
    subject: str
    names: list[str]
    not_after: dt.datetime
    days_left: int
    self_signed: bool
    warnings: list[str]


class CertificateIn(BaseModel):
    cert_pem: str = Field(min_length=1, max_length=MAX_PEM_CHARACTERS,
                          description="the certificate and its chain, PEM")
    key_pem: str = Field(min_length=1, max_length=MAX_PEM_CHARACTERS,
                         description="the private key, PEM, not encrypted")
    domain: str = Field("", max_length=253, description="a hosted domain's certificate "
                                                        "(chosen by SNI); empty: the node's")


class InstalledView(BaseModel):
    names: list[str]
    warnings: list[str]
    note: str


def installed_certificates(home: Home) -> list[Installed]:
    """The node's and every domain's certificate, read by the helper (tls/ is root's); none
    when the helper does not answer."""
    try:
        rows: list[dict[str, Any]] = helper.call(home, "tls-list")
    except helper.HelperError:
        return []
    return [Installed(r["name"], r["subject"], tuple(r["names"]),
                      dt.datetime.fromisoformat(r["not_after"]), int(r["days_left"]),
                      bool(r["self_signed"]), tuple(r["warnings"])) for r in rows]


@router.get("", response_model=list[CertificateView], responses=errors())
def list_certificates(request: Request, _who: Caller) -> Any:
    return [CertificateView(name=c.name, subject=c.subject, names=list(c.names),
                            not_after=c.not_after, days_left=c.days_left,
                            self_signed=c.self_signed, warnings=list(c.warnings))
            for c in installed_certificates(home_of(request))]


@router.post("", response_model=InstalledView, status_code=201, responses=errors(422, 503))
def install_certificate(body: CertificateIn, request: Request, _who: Caller) -> Any:
    """Check a certificate with its key (they match, the chain is in order, it names the
    node's hostname or the domain) and install it; nothing is installed when refused."""
    try:
        done = helper.call(home_of(request), "tls-install", cert_pem=body.cert_pem,
                           key_pem=body.key_pem, domain=body.domain)
    except helper.HelperRefused as exc:
        raise Refused("cert_pem", "(not shown)", str(exc)) from None
    except helper.HelperError as exc:
        raise HTTPException(503, str(exc)) from None
    return InstalledView(names=done["names"], warnings=done["warnings"],
                         note="restart smtp, submission, the mail access services and the "
                              "panel to use it")
