"""The virus definition table (guide 6.2): each database file's name, build date, signatures.

Official databases (.cvd, and .cld as freshclam keeps them after incremental updates) carry
their facts in a 512-byte ASCII header, colon-separated and space-padded:

    ClamAV-VDB:<build time>:<version>:<signatures>:<functionality level>:<md5>:<dsig>:
    <builder>:<epoch>

Local databases (.ndb, .hdb, .ldb, ...) have no header: one signature per line, so their
count is their number of signature lines, and their date is the file's modification time.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .clamd import LOCAL_DB_NAME, db_dir

if TYPE_CHECKING:
    from ..home import Home

HEADER_BYTES = 512
MAGIC = "ClamAV-VDB"
OFFICIAL_SUFFIXES = (".cvd", ".cld")
# Plain-text database kinds, one signature per line (ClamAV's signatures.md): hashes, body
# and logical signatures, phishing lists, ignore and allow lists, bytecode lists, YARA.
LOCAL_SUFFIXES = (".ndb", ".ndu", ".hdb", ".hdu", ".hsb", ".hsu", ".mdb", ".mdu", ".msb",
                  ".msu", ".ldb", ".ldu", ".cdb", ".db", ".fp", ".sfp", ".ign", ".ign2",
                  ".ftm", ".pdb", ".gdb", ".wdb", ".idb", ".crb")
# YARA files hold several rules per file; counted by their `rule` lines.
YARA_SUFFIXES = (".yar", ".yara")
# Files with these suffixes hold allow-lists, not detections: they count, but as exclusions.
ALLOW_SUFFIXES = (".fp", ".sfp", ".ign", ".ign2")


class HeaderError(ValueError):
    """A file that claims to be a CVD/CLD but whose header does not read as one."""


@dataclass(frozen=True)
class CvdHeader:
    build_time: str  # as written: "08 Jul 2012 17-57 -0400"
    version: int
    signatures: int
    functionality_level: int
    md5: str
    builder: str
    epoch: int | None  # seconds; newer headers end with it

    @property
    def build_date(self) -> datetime | None:
        if self.epoch:
            return datetime.fromtimestamp(self.epoch, UTC)
        try:
            return datetime.strptime(self.build_time, "%d %b %Y %H-%M %z")
        except ValueError:
            return None


def parse_header(raw: bytes) -> CvdHeader:
    """Read a CVD/CLD header from the first 512 bytes of the file."""
    text = raw[:HEADER_BYTES].decode("ascii", "replace").rstrip(" \0\n")
    fields = text.split(":")
    if len(fields) < 8 or fields[0] != MAGIC:
        raise HeaderError(f"not a ClamAV database header: {text[:40]!r}")
    try:
        epoch = int(fields[8]) if len(fields) > 8 and fields[8].strip() else None
        return CvdHeader(build_time=fields[1], version=int(fields[2]),
                         signatures=int(fields[3]), functionality_level=int(fields[4]),
                         md5=fields[5], builder=fields[7], epoch=epoch)
    except ValueError as exc:
        raise HeaderError(f"a field of the header is not a number: {text[:120]!r}") from exc


def read_header(path: Path) -> CvdHeader:
    with path.open("rb") as f:
        return parse_header(f.read(HEADER_BYTES))


def count_signatures(path: Path) -> int:
    """Signature lines of a plain-text database (blank and # comment lines do not count)."""
    count = 0
    yara = path.suffix in YARA_SUFFIXES
    with path.open("rb") as f:
        for line in f:
            stripped = line.strip()
            if not stripped or stripped.startswith(b"#"):
                continue
            if yara:
                words = stripped.split()
                if b"rule" in words[:3]:
                    count += 1
            else:
                count += 1
    return count


@dataclass(frozen=True)
class Definition:
    file: str
    build_date: str  # "2012-07-08 17:57 UTC", or the file's time for local databases
    signatures: int
    kind: str  # "official" or "local"
    note: str


def _fmt(moment: datetime | None) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC") if moment else "unknown"


def describe(path: Path) -> Definition:
    """One table row for one database file."""
    if path.suffix in OFFICIAL_SUFFIXES:
        try:
            header = read_header(path)
        except (OSError, HeaderError) as exc:
            return Definition(path.name, "unknown", 0, "official", f"unreadable: {exc}")
        note = f"version {header.version}, built by {header.builder}"
        return Definition(path.name, _fmt(header.build_date), header.signatures,
                          "official", note)
    mtime = datetime.fromtimestamp(path.stat().st_mtime, UTC)
    signatures = count_signatures(path)
    if path.name == LOCAL_DB_NAME:
        note = ("mailyard's local test database: detects only the EICAR test file; "
                "no real virus is detected until freshclam installs the official databases")
    elif path.suffix in ALLOW_SUFFIXES:
        note = "local allow-list (signatures here exclude, not detect)"
    else:
        note = "local database"
    return Definition(path.name, _fmt(mtime), signatures, "local", note)


def definitions(home: Home) -> list[dict[str, Any]]:
    """The table of every database file in the node's database directory, official first."""
    directory = db_dir(home)
    if not directory.is_dir():
        return []
    rows = []
    for entry in sorted(os.scandir(directory), key=lambda e: e.name):
        path = Path(entry.path)
        if not entry.is_file() or path.suffix not in (
                OFFICIAL_SUFFIXES + LOCAL_SUFFIXES + YARA_SUFFIXES):
            continue
        rows.append(describe(path))
    rows.sort(key=lambda d: (d.kind != "official", d.file))
    return [asdict(d) for d in rows]


def summary(home: Home) -> str:
    """One sentence for status displays: what this node can detect."""
    rows = definitions(home)
    official = [r for r in rows if r["kind"] == "official"]
    if official:
        total = sum(r["signatures"] for r in rows)
        return f"{total} signatures in {len(rows)} database files"

    if any(r["file"] == LOCAL_DB_NAME for r in rows):
        return ("only the local EICAR test database is installed: scanning works but detects "
                "nothing real until freshclam can download the official databases")
    if rows:
        return f"{sum(r['signatures'] for r in rows)} local signatures; no official database"
    return "no virus database: clamd cannot start until one is installed"
