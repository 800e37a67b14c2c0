"""Entry point of every log tool: pick the tool by program name, parse its options, run it.

Installed as one console script per tool name, all pointing at `main`, which looks at
`basename(sys.argv[0])`; `python -m mailyard.logtools TOOL ARGS...` names the tool first.
Exit status: 0 done, 1 the log could not be read, 2 bad usage (unknown option, bad period).
"""

from __future__ import annotations

import argparse
import io
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import BinaryIO, TextIO, cast

from mailyard.logtools import blocks, filters, operators, selectors, webmail
from mailyard.logtools.periods import PeriodError, hstamp, parse_period, parse_time
from mailyard.logtools.sources import SourceError
from mailyard.logtools.tracking import Diagnostics, Tracker
from mailyard.settings.registry import REGISTRY

SELECTORS = ("qmail-last-x", "qmail-start-end")
SHOWS = tuple(f"{name}{suffix}" for name in operators.SHOW_RESULTS for suffix in ("", "-detail"))
TOPS = tuple(f"{name}{suffix}" for name in operators.TOPS for suffix in ("", "-local", "-remote"))
FILTERS = ("xrcpt", "xsend", "xuser", "xwebmail")
TOOLS = (*SELECTORS, "hstamp", *SHOWS, *TOPS, *FILTERS)

WEBMAIL_UID_ENV = "MAILYARD_WEBMAIL_UID"
WEBMAIL_USER_SETTING = "logtools.webmail_user"
WEBMAIL_CLIENTS_SETTING = "logtools.webmail_clients"

EXAMPLES = """\
examples:
  qmail-last-x '3 hours' | show-all
  qmail-last-x '1 hour' | xrcpt someone@example.com | show-all-detail
  qmail-start-end $(hstamp '2 days ago') $(hstamp '1 hour ago') | top-domain-stats-remote
  qmail-start-end $(date +%s -d '2011-11-04 20:13') $(date +%s -d '2011-11-11 15:38') \
      | show-failures
  cat /var/log/qmail/send/current | show-deferrals      (a real qmail log on stdin)
"""

PERIOD_HELP = ("one count and one unit: seconds, minutes, hours, days or weeks (singular or "
               "plural), optionally followed by 'ago'; e.g. '3 hours', '6 days ago'. Mixed "
               "periods such as '3 days 12 hours' are refused: give '84 hours'.")


class UsageError(Exception):
    """Bad arguments that argparse could not catch; reported with the usage, exit 2."""


class _Parser(argparse.ArgumentParser):
    """argparse that reports bad usage on stderr with status 2 and our program name."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        raise SystemExit(2)


def _parser(tool: str, description: str) -> _Parser:
    return _Parser(prog=tool, description=description, epilog=EXAMPLES,
                   formatter_class=argparse.RawDescriptionHelpFormatter)


def _add_source(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("where the send log is (first that is given wins)")
    g.add_argument("-f", "--file", metavar="FILE",
                   help="read this qmail-send log file instead ('-' for standard input); "
                        "tai64n, tai64nlocal or unix-time stamps")
    g.add_argument("--logdir", metavar="DIR", type=Path,
                   help="a multilog directory (current and @....s files)")
    g.add_argument("--home", metavar="DIR",
                   help="the node's home; its send log is HOME/log/send "
                        "(default: $MAILYARD_HOME)")


def _add_input(p: argparse.ArgumentParser) -> None:
    p.add_argument("-f", "--file", metavar="FILE",
                   help="read this file instead of standard input (a selector's output or a "
                        "qmail-send log in any of its stamp forms)")


def _logdir(args: argparse.Namespace) -> Path:
    if args.logdir is not None:
        return Path(args.logdir)
    home = args.home or os.environ.get("MAILYARD_HOME")
    if not home:
        raise SourceError("no send log given: use --home DIR, set MAILYARD_HOME, "
                          "or give --logdir DIR or -f FILE")
    return Path(home) / "log" / "send"


# ---- tools ------------------------------------------------------------------------------------

def run_selector(tool: str, argv: Sequence[str], out: TextIO, err: TextIO) -> int:
    if tool == "qmail-last-x":
        p = _parser(tool, "Select the send-log lines of the last PERIOD, up to now, and pass "
                          "them on unchanged for an operator to read (operators show readable "
                          "local times).\n\n"
                          "PERIOD is " + PERIOD_HELP)
        p.add_argument("period", nargs="+", metavar="PERIOD")
    else:
        p = _parser(tool, "Select the send-log lines stamped from START to END (inclusive) and "
                          "pass them on unchanged for an operator to read (operators show "
                          "readable local times).\n\n"
                          "START and END are epoch seconds (what hstamp or `date +%s` print), "
                          "a local date 'YYYY-MM-DD HH:MM', or a fuzzy date like '5 hours ago'.")
        p.add_argument("start", metavar="START")
        p.add_argument("end", metavar="END")
    _add_source(p)
    if not argv and out.isatty():
        p.print_help(out)
        return 0
    args = p.parse_args(argv)
    if out.isatty():
        # The guide's rule: a selector alone only shows its help; its output is for an operator.
        p.print_help(out)
        print(f"\n{tool}: pipe this into an operator, e.g. `{tool} ... | show-all`.", file=out)
        return 0
    now = selectors.now()
    try:
        if tool == "qmail-last-x":
            start: float = now - parse_period(" ".join(args.period))
            end: float | None = None
        else:
            start, end = parse_time(args.start, now), parse_time(args.end, now)
            if end < start:
                raise UsageError(f"END ({args.end}) is before START ({args.start})")
    except (PeriodError, UsageError) as exc:
        p.error(str(exc))
    diag = Diagnostics()
    binary = _binary(out)
    if args.file is not None:
        selectors.select(binary, err, diag, start, end, file=args.file)
    else:
        selectors.select(binary, err, diag, start, end, logdir=_logdir(args))
    binary.flush()
    diag.warn(tool, err)
    return 0


class _TextSink(io.RawIOBase):
    """Bytes written to a text stream that has no binary buffer (a caller's StringIO)."""

    def __init__(self, out: TextIO) -> None:
        self.out = out

    def writable(self) -> bool:
        return True

    def write(self, data: bytes) -> int:  # type: ignore[override]
        self.out.write(bytes(data).decode("utf-8", "surrogateescape"))
        return len(data)


def _binary(out: TextIO) -> BinaryIO:
    """The byte stream under `out`, where a selector copies the log's bytes."""
    buffer = getattr(out, "buffer", None)
    if buffer is not None:
        out.flush()
        return cast(BinaryIO, buffer)
    return io.BufferedWriter(_TextSink(out))


def run_hstamp(argv: Sequence[str], out: TextIO, err: TextIO) -> int:
    p = _parser("hstamp", "Print the epoch seconds of a fuzzy date: 'now' or a period back "
                          "from now, e.g. '5 hours ago'. For qmail-start-end.\n\nThe period is "
                + PERIOD_HELP)
    p.add_argument("text", nargs="+", metavar="TEXT")
    args = p.parse_args(argv)
    try:
        print(hstamp(" ".join(args.text), selectors.now()), file=out)
    except PeriodError as exc:
        p.error(str(exc))
    return 0


def _alone_on_terminal(p: argparse.ArgumentParser, argv: Sequence[str], out: TextIO) -> bool:
    """True (after printing the help) when run with no arguments and nothing piped in: an
    operator or filter typed alone at a terminal is asking what it does."""
    if argv or not sys.stdin.isatty():
        return False
    p.print_help(out)
    print(f"\n{p.prog}: reads a selector's output: pipe one into it, or give -f FILE.",
          file=out)
    return True


def _needs_input(p: argparse.ArgumentParser, args: argparse.Namespace, out: TextIO) -> bool:
    """True (after printing help) when there is nothing to read: no -f and stdin a terminal."""
    if args.file is None and sys.stdin.isatty():
        p.print_help(sys.stderr)
        print(f"\n{p.prog}: reads a selector's output: pipe one into it, or give -f FILE.",
              file=sys.stderr)
        return True
    return False


def run_show(tool: str, argv: Sequence[str], out: TextIO, err: TextIO) -> int:
    detail = tool.endswith("-detail")
    base = tool.removesuffix("-detail")
    what = {"show-all": "every delivery attempt (and the administrator's hold, release, "
                        "retry, delete, bounce and purge of a message, as ACTION - msg=N)",
            "show-success": "successful deliveries",
            "show-failures": "failed (permanent) deliveries",
            "show-deferrals": "deferred (temporary failure) delivery attempts"}[base]
    p = _parser(tool, f"Show {what}, one line each:\n  TIME RESULT "
                      + ("SENDER " if detail else "")
                      + "RECIPIENT remote=HOST|local=ADDRESS REPLY\nwith the reply decoded "
                        "(qmail writes spaces as '_' and line breaks as '/').")
    _add_input(p)
    p.add_argument("--channel", choices=("local", "remote"), help="only this kind of delivery")
    if _alone_on_terminal(p, argv, out):
        return 0
    args = p.parse_args(argv)
    if _needs_input(p, args, out):
        return 2
    diag = Diagnostics()
    tracker = Tracker(diag)
    stream, name = blocks.open_input(args.file)
    with stream:
        operators.write_attempts(blocks.attempts_blocks(stream, name, tracker), out,
                                 operators.SHOW_RESULTS[base], detail, args.channel)
    diag.warn(tool, err)
    diag.note(tool, err)
    return 0


def run_top(tool: str, argv: Sequence[str], out: TextIO, err: TextIO) -> int:
    channel = None
    base = tool
    for suffix in ("-local", "-remote"):
        if tool.endswith(suffix):
            channel, base = suffix[1:], tool.removesuffix(suffix)
    spec = operators.TOPS[base]
    p = _parser(tool, f"Count, per {spec.key}, the messages, delivery attempts, successes, "
                      f"deferrals, failures and bytes"
                      + (f" of {channel} deliveries" if channel else "")
                      + f"; sorted by {spec.sort}.\nA 'user' is the node's side of a delivery: "
                        "the recipient of a local delivery, the sender of a remote one.")
    _add_input(p)
    p.add_argument("--sort", choices=(*operators.FIELDS, spec.key), default=spec.sort,
                   help=f"sort by this column (numbers largest first; default {spec.sort})")
    p.add_argument("--limit", type=int, metavar="N", help="print only the first N rows")
    p.add_argument("--by", choices=("user", "sender", "recipient"), default=spec.by,
                   help=f"whose address makes the row (default {spec.by})")
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="a JSON list of objects")
    fmt.add_argument("--csv", action="store_true", help="CSV with a header line")
    if _alone_on_terminal(p, argv, out):
        return 0
    args = p.parse_args(argv)
    if args.limit is not None and args.limit < 0:
        p.error(f"--limit must be 0 or more, not {args.limit}")
    if _needs_input(p, args, out):
        return 2
    diag = Diagnostics()
    tracker = Tracker(diag)
    stream, name = blocks.open_input(args.file)
    with stream:
        rows = blocks.top_rows_blocks(stream, name, tracker, spec, args.by, channel)
    items = operators.order_rows(rows, spec, args.sort, args.limit)
    render = (operators.render_json if args.json else
              operators.render_csv if args.csv else operators.render_table)
    render(items, spec.key, out)
    diag.warn(tool, err)
    diag.note(tool, err)
    return 0


def _webmail(args: argparse.Namespace) -> tuple[set[int], webmail.SmtpWebmail | None]:
    """The webmail's uids and, on a node with webmail clients set, its SMTP side.

    --uid or --user name the sendmail side, else $MAILYARD_WEBMAIL_UID, else the node's
    settings (with --home or $MAILYARD_HOME), else the registry's default user.
    """
    home = args.home or os.environ.get("MAILYARD_HOME")
    values: dict[str, object] = {}
    if home:
        from mailyard.home import Home
        from mailyard.store.settings_store import load_settings  # only needed on a node

        try:
            values = load_settings(Home.find(home))
        except Exception as exc:  # a missing or unreadable node: say so, no traceback
            raise UsageError(f"cannot read the node's settings at {home}: {exc}; give "
                             f"--user NAME or --uid N instead") from None
    user = str(values.get(WEBMAIL_USER_SETTING, REGISTRY[WEBMAIL_USER_SETTING].default))
    where = f"the node setting {WEBMAIL_USER_SETTING}" if home else \
        f"the default of {WEBMAIL_USER_SETTING}"
    env = os.environ.get(WEBMAIL_UID_ENV)
    if args.uid is not None:
        uids = {args.uid}
    elif args.user is not None:
        user, where = args.user, "--user"
    elif env:
        if not env.isdigit():
            raise UsageError(f"{WEBMAIL_UID_ENV}={env!r} is not a uid (a whole number)")
        uids = {int(env)}
    if args.uid is None and (args.user is not None or not env):
        try:
            uids = {webmail.uid_of(user)}
        except webmail.WebmailError as exc:
            raise UsageError(f"{exc} ({where}): give the webmail's user with --user NAME or "
                             f"--uid N, or set {WEBMAIL_USER_SETTING}") from None
    clients = args.clients.split(",") if args.clients is not None else \
        list(values.get(WEBMAIL_CLIENTS_SETTING, []))  # type: ignore[call-overload]
    clients = [c.strip() for c in clients if c.strip()]
    if not clients:
        return uids, None
    if not home:
        raise UsageError("--clients needs the node's SMTP logs: give --home DIR or set "
                         "MAILYARD_HOME")
    try:
        networks = webmail.networks_of(clients)
    except ValueError as exc:
        raise UsageError(f"--clients: {exc}; give addresses or networks, e.g. "
                         f"127.0.0.1,::1") from None
    return uids, webmail.SmtpWebmail(Path(home), networks)


def _user_domains(args: argparse.Namespace) -> list[str]:
    if args.domains is not None:
        return [d.strip() for d in args.domains.split(",") if d.strip()]
    home = args.home or os.environ.get("MAILYARD_HOME")
    if not home:
        raise UsageError("no node to ask which domains the user owns: give --home DIR, set "
                         "MAILYARD_HOME, or list them with --domains a.com,b.com")
    from mailyard.store.accounts import domains_owned_by  # the store is only needed on a node

    return list(domains_owned_by(Path(home), args.user))


def run_filter(tool: str, argv: Sequence[str], out: TextIO, err: TextIO) -> int:
    descriptions = {
        "xrcpt": "Pass on the deliveries to ADDRESS (with their messages' header lines).",
        "xsend": "Pass on the whole messages sent by ADDRESS ('<>' for bounces).",
        "xuser": "Pass on the mail of the domains owned by system user USER: whole messages "
                 "sent from those domains and the deliveries to them.",
        "xwebmail": "Pass on the whole messages of the webmail: those it sent through "
                    "sendmail (the uid in the 'info msg' line is the webmail user's) and, "
                    "when webmail clients are set, those the SMTP services accepted from "
                    "them.",
    }
    p = _parser(tool, descriptions[tool] + " Reads a selector's output; writes the same form, "
                "so filters chain and feed any operator.")
    if tool in ("xrcpt", "xsend"):
        p.add_argument("address", nargs="+", metavar="ADDRESS",
                       help="an address, or @domain for every address of a domain")
    elif tool == "xuser":
        p.add_argument("user", metavar="USER")
        p.add_argument("--domains", metavar="D1,D2",
                       help="use these domains instead of asking the node's store")
        p.add_argument("--home", metavar="DIR", help="the node's home (default $MAILYARD_HOME)")
    else:
        g = p.add_mutually_exclusive_group()
        g.add_argument("--user", metavar="NAME",
                       help=f"the system user the webmail sends through sendmail as (default "
                            f"${WEBMAIL_UID_ENV} as a uid, then the node setting "
                            f"{WEBMAIL_USER_SETTING}, else "
                            f"{REGISTRY[WEBMAIL_USER_SETTING].default})")
        g.add_argument("--uid", type=int, metavar="N", help="the same user, by uid")
        p.add_argument("--clients", metavar="IP,...",
                       help=f"addresses the webmail sends by SMTP from (default the node "
                            f"setting {WEBMAIL_CLIENTS_SETTING}); needs the node's logs")
        p.add_argument("--home", metavar="DIR", help="the node's home (default $MAILYARD_HOME)")
    _add_input(p)
    if _alone_on_terminal(p, argv, out):
        return 0
    args = p.parse_args(argv)
    rules: tuple[Callable, Callable | None]  # type: ignore[type-arg]
    try:
        if tool == "xrcpt":
            rules = filters.xrcpt(args.address)
        elif tool == "xsend":
            rules = filters.xsend(args.address)
        elif tool == "xuser":
            rules = filters.xuser(_user_domains(args))
        else:
            rules = filters.xwebmail(*_webmail(args))
    except UsageError as exc:
        p.error(str(exc))
    if _needs_input(p, args, out):
        return 2
    diag = Diagnostics()
    stream, name = blocks.open_input(args.file)
    with stream:
        filters.run_filter(blocks.filter_lines_blocks(stream, name, diag), out, Tracker(diag),
                           rules[0], rules[1])
    diag.warn(tool, err)
    return 0


def run(tool: str, argv: Sequence[str], out: TextIO | None = None,
        err: TextIO | None = None) -> int:
    """Run log tool `tool` with arguments `argv`; the exit status."""
    out = out or sys.stdout
    err = err or sys.stderr
    try:
        if tool in SELECTORS:
            return run_selector(tool, argv, out, err)
        if tool == "hstamp":
            return run_hstamp(argv, out, err)
        if tool in SHOWS:
            return run_show(tool, argv, out, err)
        if tool in TOPS:
            return run_top(tool, argv, out, err)
        if tool in FILTERS:
            return run_filter(tool, argv, out, err)
    except SourceError as exc:
        print(f"{tool}: error: {exc}", file=err)
        return 1
    print(f"unknown log tool {tool!r}; the tools are: {' '.join(TOOLS)}", file=err)
    return 2


def _quiet_broken_pipe() -> int:
    """`... | show-all | head`: the reader left; stop quietly, as a C tool killed by SIGPIPE."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    return 128 + 13


def main(argv: Sequence[str] | None = None, via_module: bool = False) -> int:
    """Console-script entry point: the tool is the program name (or argv[0] with via_module)."""
    if argv is None:
        tool = os.path.basename(sys.argv[0])
        argv = sys.argv[1:]
        if tool not in TOOLS and argv and argv[0] in TOOLS:
            tool, argv = argv[0], argv[1:]
    elif via_module or argv and argv[0] in TOOLS:
        if not argv:
            print("usage: python -m mailyard.logtools TOOL [ARGS...]\ntools: "
                  + " ".join(TOOLS), file=sys.stderr)
            return 2
        tool, argv = argv[0], argv[1:]
    else:
        tool = os.path.basename(sys.argv[0])
    sys.stdout.reconfigure(errors="surrogateescape")  # type: ignore[union-attr]
    try:
        status = run(tool, list(argv))
        sys.stdout.flush()
        return status
    except BrokenPipeError:
        return _quiet_broken_pipe()
    except KeyboardInterrupt:
        return 130
