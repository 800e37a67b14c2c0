"""What each page shows: its boxes, in the guide's order, with their settings from the registry.

A box names registry settings (mostly by the registry's own `box`), the services whose status
and controls it shows, and whether the guide gives it a "Cascade to nodes?" checkbox. Labels,
help texts, types and limits of the fields all come from the registry.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..settings.registry import REGISTRY, Setting
from ..settings.types import Bool, Choice, Hostname, Lines, Text


@dataclass(frozen=True)
class Box:
    id: str
    title: str
    keys: tuple[str, ...] = ()
    services: tuple[tuple[str, str], ...] = ()  # (service, status label)
    cascade: bool = False
    version_of: str | None = None  # show this service's version
    port: tuple[str, str] | None = None  # (label, listener) of a fixed port to show
    note: str = ""
    all_required: bool = False  # the guide says "( All fields are required )"


@dataclass(frozen=True)
class Field:
    key: str
    label: str
    help: str
    widget: str  # "text", "select" or "textarea"
    value: str
    required: bool
    unit: str = ""
    choices: list[tuple[str, str]] = field(default_factory=list)
    allowed: str = ""

    @property
    def html_id(self) -> str:
        return "f-" + self.key.replace(".", "-").replace("_", "-")


def keys_in(box: str, prefix: str = "") -> tuple[str, ...]:
    return tuple(k for k, s in REGISTRY.items() if s.box == box and k.startswith(prefix))


def service_keys(name: str, *which: str) -> tuple[str, ...]:
    return tuple(f"service.{name}.{w}" for w in which)


_TOGGLES = ("start_on_boot", "auto_restart")
_SERVICE_LABELS = {"smtp": "SMTP (inbound)", "send": "SMTP (outbound)",
                   "submission": "Alternate SMTP", "pop3": "POP3", "pop3s": "Secure POP3",
                   "imap": "IMAP", "imaps": "Secure IMAP", "spamd": "SpamAssassin",
                   "clamd": "ClamAV", "freshclam": "Freshclam"}

PAGES: dict[str, tuple[str, list[Box]]] = {
    "mta": ("MTA", [
        Box("smtp-primary", "Primary SMTP Server Settings",
            keys_in("smtp_primary") + service_keys("smtp", *_TOGGLES)
            + service_keys("send", *_TOGGLES),
            services=(("smtp", "SMTP Status (inbound)"), ("send", "SMTP Status (outbound)")),
            cascade=True, version_of="smtp", port=("Primary SMTP Port", "smtp")),
        Box("smtp-inbound", "MTA SMTP Options (inbound)", keys_in("smtp_inbound"), cascade=True),
        Box("smtp-alternate", "Alternate SMTP Server Settings",
            keys_in("smtp_alternate") + service_keys("submission", *_TOGGLES),
            services=(("submission", "SMTP Status (inbound)"),), cascade=True,
            note="Port 587 is the standard port for users' mail programs (RFC 6409)."),
        Box("smtp-outbound", "MTA SMTP Options (outbound)", keys_in("smtp_outbound"),
            cascade=True),
        Box("mta-server", "MTA Server Options", keys_in("mta_server"), all_required=True),
        Box("bounce", "MTA Bounce Message Options", keys_in("bounce"), cascade=True),
        Box("logtools", "Log Tools: Webmail", keys_in("logtools"), cascade=True,
            note="What xwebmail counts as the webmail's mail."),
    ]),
    "mda": ("MDA", [
        Box("mda-pop3-control", "MDA Server Control [POP3]",
            service_keys("pop3", "start_on_boot") + service_keys("pop3s", "start_on_boot"),
            services=(("pop3", "POP3 Status"), ("pop3s", "Secure POP3 Status"))),
        Box("mda-imap-control", "MDA Server Control [IMAP]",
            service_keys("imap", "start_on_boot") + service_keys("imaps", "start_on_boot"),
            services=(("imap", "IMAP Status"), ("imaps", "Secure IMAP Status"))),
        Box("mda-pop3-info", "MDA Server Info [POP3]", keys_in("mda", "pop3"),
            version_of="pop3", all_required=True),
        Box("mda-imap-info", "MDA Server Info [IMAP]", keys_in("mda", "imap"),
            version_of="imap", all_required=True),
        Box("mda-login", "MDA Login Options", keys_in("mda", "mda.")),
    ]),
    "spam": ("Spam Filtering", [
        Box("spamd-control", "SpamAssassin Control",
            service_keys("spamd", *_TOGGLES, "memory_limit_mb"),
            services=(("spamd", "SpamAssassin Status"),), cascade=True),
        Box("spamd-info", "SpamAssassin Information", version_of="spamd"),
        Box("spam-lists", "Spam Access Lists", keys_in("spam_lists")),
        Box("spam-options", "SpamAssassin Options", keys_in("spam_options"), cascade=True),
        Box("spam-bayes", "Bayesian Scanning Options", keys_in("spam_bayes"),
            all_required=True),
    ]),
    "virus": ("Virus Filtering", [
        Box("clamd-control", "ClamAV Control",
            service_keys("clamd", *_TOGGLES, "memory_limit_mb"),
            services=(("clamd", "ClamAV Status"),), cascade=True),
        Box("clamd-info", "ClamAV Information", version_of="clamd"),
        Box("virus-options", "ClamAV Options", keys_in("virus_options"), cascade=True),
        Box("freshclam-control", "Freshclam Control",
            service_keys("freshclam", "start_on_boot"),
            services=(("freshclam", "Freshclam Status"),), cascade=True),
    ]),
    "mailauth": ("Mail Authentication", [
        Box("mail-auth", "DKIM Signing and DNS Records", keys_in("mail_auth"), cascade=True,
            note="Each domain's records to publish and their live check are below."),
    ]),
}


def _label(spec: Setting, box: Box) -> str:
    if spec.key.startswith("service."):
        service = spec.key.split(".")[1]
        several = len({k.split(".")[1] for k in box.keys if k.startswith("service.")}) > 1
        if several or box.services and box.services[0][0] != service:
            return f"{_SERVICE_LABELS.get(service, service)}: {spec.label}"
    return spec.label


def _bool_words(key: str) -> list[tuple[str, str]]:
    if key.startswith("service."):
        return [("on", "Yes"), ("off", "No")]
    return [("on", "Enabled"), ("off", "Disabled")]


def make_field(spec: Setting, value: Any, box: Box, typed: str | None = None) -> Field:
    """The form field of a setting; `typed` is what the admin typed (kept after a refusal)."""
    kind = spec.type
    text = typed if typed is not None else spec.format(value)
    widget, choices = "text", []
    if isinstance(kind, Bool):
        widget, choices = "select", _bool_words(spec.key)
    elif isinstance(kind, Choice):
        widget, choices = "select", list(kind.choices)
    elif isinstance(kind, Lines):
        widget = "textarea"
    required = not isinstance(kind, Lines)
    if isinstance(kind, Text | Hostname):
        required = not kind.allow_empty
    unit = getattr(kind, "unit", "")
    return Field(key=spec.key, label=_label(spec, box), help=spec.help, widget=widget,
                 value=text, required=required,
                 unit=unit, choices=choices, allowed=kind.describe())


def fields_of(box: Box, values: dict[str, Any]) -> list[Field]:
    return [make_field(REGISTRY[k], values[k], box) for k in box.keys]


def every_page_key() -> set[str]:
    return {k for _title, boxes in PAGES.values() for box in boxes for k in box.keys}


# ---- issue 19: the sendmail service (mail of local users: PHP, cron) on the MTA page ----------
PAGES["mta"][1].append(
    Box("sendmail", "Local Mail (sendmail)", service_keys("sendmail", "start_on_boot"),
        services=(("sendmail", "sendmail Status"),),
        note="Queues what web sites and other local users send with sendmail; see "
             "docs/limits.md."))
