"""CLI commands that put the node's programs on PATH and start the node at boot (systemd)."""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path
from typing import Any

from .common import CliError

# Programs linked into /usr/local/bin (the guide's 8.1 puts its log tools on PATH by hand).
_BIN_PREFIXES = ("mailyard", "qmail-", "hstamp", "show-", "top-", "xrcpt", "xsend", "xuser",
                 "xwebmail")
UNIT_PATH = Path("/etc/systemd/system/mailyard.service")


def add_parsers(sub: Any) -> None:
    p = sub.add_parser("install-commands",
                       help="link mailyard, sendmail and the log tools into /usr/local")
    p.add_argument("--prefix", default="/usr/local")
    p.set_defaults(func=install_commands)
    p = sub.add_parser("install-service", help="write a systemd unit that starts the node at boot")
    p.add_argument("--unit", default=str(UNIT_PATH))
    p.set_defaults(func=install_service)


def _link(target: Path, link: Path) -> bool:
    """Point `link` at `target`, replacing only our own earlier links, never another file."""
    if link.is_symlink():
        if Path(os.readlink(link)) == target:
            return False
        if ".venv" not in os.readlink(link):
            return False
        link.unlink()
    elif link.exists():
        return False
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(target)
    return True


def install_commands(args: argparse.Namespace) -> int:
    bindir = Path(sys.executable).parent
    prefix = Path(args.prefix)
    made = []
    for program in sorted(bindir.iterdir()):
        if program.name.startswith(_BIN_PREFIXES) and _link(program, prefix / "bin" / program.name):
            made.append(program.name)
    # /usr/local/sbin comes before /usr/sbin on root's PATH; PHP and cron call `sendmail`.
    if _link(bindir / "sendmail", prefix / "sbin" / "sendmail"):
        made.append("sendmail (sbin)")
    print(f"linked {len(made)} program(s) into {prefix}" if made else "programs already linked")
    return 0


def install_service(args: argparse.Namespace) -> int:
    home = args.home or os.environ.get("MAILYARD_HOME")
    if not home:
        raise CliError("give the node's home with --home DIR or MAILYARD_HOME", 2)
    if not shutil.which("systemctl"):
        print("note: this machine has no systemd; the unit is written for when it does")
    mailyard = Path(sys.executable).parent / "mailyard"
    unit = Path(args.unit)
    unit.write_text(
        "[Unit]\nDescription=mailyard mail node\nAfter=network-online.target\n"
        "Wants=network-online.target\n\n[Service]\nType=forking\n"
        f"Environment=MAILYARD_HOME={home}\n"
        f"ExecStart={mailyard} up\nExecStop={mailyard} down\n"
        f"PIDFile={Path(home) / 'run' / 'supervisord.pid'}\nTimeoutStartSec=180\n\n"
        "[Install]\nWantedBy=multi-user.target\n")
    print(f"wrote {unit}; enable it with `systemctl enable mailyard`")
    return 0
