"""`mailyard trail ADDRESS|MESSAGE-ID|QUEUE-ID`: did the mail arrive? (trail.py, trail_logs.py)"""

from __future__ import annotations

import argparse
from typing import Any

from ..trail import Acceptance, Attempt, MessageTrail, Refusal, TrailError, query_of, show_time
from ..trail import since_of as parse_since
from ..trail_logs import trail
from .common import EXIT_USAGE, CliError, home_of, print_json


def add_parsers(sub: Any) -> None:
    p = sub.add_parser(
        "trail", help="what happened to the mail of an address, a Message-ID or a queue id",
        description="Follow mail through the node's logs: its acceptance at SMTP time, each "
                    "delivery attempt and its answer, the Maildir file or the bounce, and "
                    "what was refused at SMTP time (for an address: mail from or to it).")
    p.add_argument("query", metavar="ADDRESS|MESSAGE-ID|QUEUE-ID",
                   help="user@example.com, <message-id@host> or a queue id (digits)")
    p.add_argument("--since", metavar="DURATION|DATE",
                   help="only logs from then on: '3 days', '12 hours', '2026-11-30 08:00' or "
                        "epoch seconds (default: every log the node keeps)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=trail_command)


def trail_command(args: argparse.Namespace) -> int:
    try:
        query = query_of(args.query)
        since = parse_since(args.since) if args.since else None
    except TrailError as exc:
        raise CliError(str(exc), EXIT_USAGE) from None
    found = trail(home_of(args).log_dir, query, since)
    if args.json:
        print_json(found.to_json())
        return 0
    if not found.messages and not found.refusals:
        print(f"nothing in the logs for {args.query}"
              + (f" since {show_time(since)}" if since is not None else ""))
        return 0
    for m in found.messages:
        print("\n".join(_message_lines(m)))
        print()
    for r in found.refusals:
        print(_refusal_line(r))
    return 0


def _message_lines(m: MessageTrail) -> list[str]:
    head = f"message {m.qid}: {m.state}"
    if m.bounce_of is not None:
        head += f" (the bounce of message {m.bounce_of})"
    lines = [head]
    if m.accepted is not None:
        lines += _acceptance_lines(m.accepted)
    elif m.sender is not None:
        lines.append(f"  queued    {show_time(m.first_seen)}  from <{m.sender}> "
                     f"({m.size} bytes, uid {m.uid}; not by SMTP or before the logs kept)")
    for action in m.actions:
        reason = f": {action['reason']}" if action["reason"] else ""
        lines.append(f"  {action['action']:<9} {show_time(action['time'])}  "
                     f"by the administrator{reason}")
    for a in m.attempts:
        lines.append(_attempt_line(a))
    if m.bounced is not None:
        to = f" -> message {m.bounce_qid}" if m.bounce_qid is not None else ""
        lines.append(f"  bounce    {show_time(m.bounced)}  a delivery status notification "
                     f"went to <{m.sender or ''}>{to}")
    if m.ended is not None:
        lines.append(f"  done      {show_time(m.ended)}  left the queue")
    for rcpt, state in m.recipients.items():
        lines.append(f"  {state:<12} {rcpt}")
    return lines


def _acceptance_lines(a: Acceptance) -> list[str]:
    tls = a.tls if a.tls not in (None, "no") else "no TLS"
    helo = f" helo {a.helo}" if a.helo and a.helo != "-" else ""
    user = f", user {a.user}" if a.user else ""
    lines = [f"  accepted  {show_time(a.time)}  {a.service} from {a.ip}{helo}, {tls}{user}, "
             f"{a.size} bytes",
             f"            from <{a.sender}> to {', '.join(f'<{r}>' for r in a.recipients)}"]
    if a.msgid:
        lines.append(f"            Message-ID <{a.msgid}>")
    if a.filters:
        lines.append(f"            filters {', '.join(a.filters)}")
    lines.append(f"            reply {a.reply}")
    return lines


def _attempt_line(a: Attempt) -> str:
    result = a.result or "under way"
    line = f"  delivery  {show_time(a.started)}  {a.channel} {a.recipient}: {result}"
    if a.remote_host:
        line += f" ({a.remote_host})"
    # the report without the lines told apart below (the Maildir file, the spam score)
    report = " / ".join(part for part in a.report.split(" / ")
                        if not part.startswith(("maildir ", "spam score ")))
    if report:
        line += f": {report}"
    if a.maildir_file:
        line += f" -> {a.maildir_folder} {a.maildir_file}"
    if a.spam_score:
        line += f" (spam score {a.spam_score})"
    return line


def _refusal_line(r: Refusal) -> str:
    sender = f" from <{r.sender}>" if r.sender else ""
    return (f"refused   {show_time(r.time)}  {r.service} {r.ip}{sender}: {r.value} "
            f"-> {r.reply} {r.text} ({r.rule})")
