"""The DNS records a local domain should publish for its mail, as zone-file lines.

What is wanted follows from the node's facts (hostname, the domain's DKIM keys, the DMARC
policy setting); `dnscheck` compares it with what is published.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..store.dkim_keys import KeyInfo

# RFC 1035 3.3.14 / 4.3: a TXT record is a sequence of character-strings of at most 255
# octets each; a longer value (a 2048-bit RSA key is about 400) is split across several.
TXT_STRING_MAX = 255
# Zone-file TTL for the lines we print: an hour, the common default of hosting panels.
ZONE_TTL = 3600

REQUIRED_KINDS = ("MX", "SPF", "DKIM", "DMARC")
OPTIONAL_KINDS = ("TLS-RPT", "MTA-STS")


@dataclass(frozen=True)
class Record:
    kind: str  # MX, SPF, DKIM, DMARC, TLS-RPT, MTA-STS
    name: str  # owner name, without the final dot
    rtype: str  # MX or TXT
    value: str  # MX: "PREFERENCE HOST"; TXT: the text, unquoted and unsplit
    note: str = ""
    optional: bool = False  # e.g. a retired DKIM key: fine to publish, fine to take down

    @property
    def required(self) -> bool:
        return self.kind in REQUIRED_KINDS and not self.optional

    def zone_line(self) -> str:
        if self.rtype == "TXT":
            data = " ".join(quote_txt(part) for part in split_txt(self.value))
        else:
            data = self.value
        return f"{self.name}. {ZONE_TTL} IN {self.rtype} {data}"


def split_txt(text: str) -> list[str]:
    """The character-strings of a TXT value: 255 octets each, never cutting a UTF-8 sequence."""
    raw = text.encode()
    parts = []
    while raw:
        cut = min(len(raw), TXT_STRING_MAX)
        while cut < len(raw) and (raw[cut] & 0xC0) == 0x80:
            cut -= 1
        parts.append(raw[:cut].decode())
        raw = raw[cut:]
    return parts or [""]


def quote_txt(part: str) -> str:
    return '"' + part.replace("\\", "\\\\").replace('"', '\\"') + '"'


def spf_value(hostname: str) -> str:
    """Mail for the domain comes from its MX hosts and from this node; nothing else."""
    return f"v=spf1 mx a:{hostname} -all"


def dkim_value(key: KeyInfo) -> str:
    return f"v=DKIM1; k={key.algorithm}; p={key.public_b64}"


def dmarc_value(policy: str) -> str:
    return f"v=DMARC1; p={policy}; adkim=r; aspf=r"


def wanted_records(domain: str, hostname: str, keys: list[KeyInfo], dmarc_policy: str,
                   postmaster: str = "") -> list[Record]:
    """Every record `domain` should publish, the required ones first."""
    report_to = postmaster or f"postmaster@{domain}"
    records = [
        Record("MX", domain, "MX", f"10 {hostname}."),
        Record("SPF", domain, "TXT", spf_value(hostname)),
    ]
    for key in keys:
        note = "" if key.active else "retired: keep it published a few days, then remove it"
        records.append(Record("DKIM", f"{key.selector}._domainkey.{domain}", "TXT",
                              dkim_value(key), note, optional=not key.active))
    records += [
        Record("DMARC", f"_dmarc.{domain}", "TXT", dmarc_value(dmarc_policy)),
        Record("TLS-RPT", f"_smtp._tls.{domain}", "TXT", f"v=TLSRPTv1; rua=mailto:{report_to}",
               "optional: where other servers report failed TLS to this domain's MX"),
    ]
    return records


def zone_text(records: list[Record]) -> str:
    lines = []
    for record in records:
        if record.note:
            lines.append(f"; {record.kind}: {record.note}")
        lines.append(record.zone_line())
    return "\n".join(lines) + "\n"
