"""CLI commands for the mail queue (the guide's 7.2 and 7.3), over mailyard.queue.admin."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ..queue import QueueError, admin
from ..queue.admin import LIST_CHOICES, PURGE_CHOICES
from ..services import control
from . import cascade
from .common import EXIT_USAGE, CliError, home_of, print_json, print_table

# The services that touch the queue; `queue reset` stops them around the move (guide 7.3.1).
QUEUE_SERVICES = ("smtp", "submission", "send")


def add_parsers(sub: Any) -> None:
    q = sub.add_parser("queue", help="the mail queue").add_subparsers(dest="action", required=True)
    p = q.add_parser("stats", help="messages in Todo, Local and Remote")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=queue_stats)
    p = q.add_parser("list", help="the messages in the queue")
    p.add_argument("which", nargs="?", default="all", choices=LIST_CHOICES)
    _add_filters(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=queue_list)
    p = q.add_parser("show", help="one message: envelope, state, failures, text")
    p.add_argument("id")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=queue_show)
    for action, text in ACTION_HELP.items():
        p = q.add_parser(action, help=text)
        p.add_argument("ids", nargs="*", metavar="ID", help="queue ids (see `queue list`)")
        _add_filters(p)
        if action == "hold":
            p.add_argument("--reason", default=None,
                           help="why the messages are held (shown in the queue and the send log)")
        p.add_argument("--json", action="store_true")
        p.set_defaults(func=queue_action, queue_action=action)
    p = q.add_parser("purge", help="delete every message of a queue (not the same as process)")
    p.add_argument("which", nargs="?", default="all", choices=PURGE_CHOICES)
    p.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    p.add_argument("--cascade", action="store_true",
                   help="purge it on every node of the cluster (from the manager)")
    p.set_defaults(func=queue_purge)
    p = q.add_parser("process", help="make every waiting message due now")
    p.add_argument("--cascade", action="store_true",
                   help="on every node of the cluster (from the manager)")
    p.set_defaults(func=queue_process)
    p = q.add_parser("send-test", help="inject a test message")
    p.add_argument("--to", required=True)
    p.add_argument("--subject", default="mailyard test message")
    p.add_argument("--body", default="")
    p.set_defaults(func=queue_send_test)
    p = q.add_parser("reset", help="move a broken queue aside as queue.bad and start afresh")
    p.add_argument("--yes", action="store_true")
    p.set_defaults(func=queue_reset)


# The actions on messages (queue.admin.ACTIONS) and what each does, for --help.
ACTION_HELP = {
    "hold": "keep messages from delivery until released (kept across restarts)",
    "release": "lift the hold of messages; they are due at once",
    "retry": "make messages due now instead of at their next retry time",
    "bounce": "fail the recipients still to do now and send the sender a bounce (DSN)",
    "delete": "remove messages from the queue without delivery or bounce",
}


def _add_filters(p: argparse.ArgumentParser) -> None:
    p.add_argument("--sender", "--from", dest="sender", metavar="TEXT",
                   help="the envelope sender contains TEXT (<> for bounces)")
    p.add_argument("--recipient", "--to", dest="recipient", metavar="TEXT",
                   help="some recipient contains TEXT")
    p.add_argument("--domain", metavar="DOMAIN",
                   help="the sender or some recipient is in DOMAIN (or below it)")
    p.add_argument("--older-than", metavar="DURATION",
                   help="in the queue at least this long: 90s, 30m, 12h, 3d, 1w")
    p.add_argument("--state", choices=["pending", "deferred", "done", "failed"],
                   help="some recipient is in this state")
    p.add_argument("--held", action="store_const", const=True, default=None,
                   help="only held messages")
    p.add_argument("--not-held", dest="held", action="store_const", const=False,
                   help="only messages that are not held")


def _filter(args: argparse.Namespace) -> Any:
    from ..queue import select  # as _admin: the queue is loaded for queue commands only

    return _call(select.make_filter, sender=args.sender, recipient=args.recipient,
                 domain=args.domain, older_than=args.older_than, state=args.state,
                 held=args.held, which=getattr(args, "which", "all"))


def _admin() -> Any:
    return admin


def _call(fn: Any, *args: Any, **kwargs: Any) -> Any:
    try:
        return fn(*args, **kwargs)
    except QueueError as exc:
        raise CliError(str(exc), EXIT_USAGE if not getattr(exc, "temporary", True) else 1) \
            from None


def _confirm(question: str, yes: bool) -> None:
    if yes:
        return
    if not sys.stdin.isatty():
        raise CliError(f"{question} Refusing without a terminal; add --yes.", EXIT_USAGE)
    if input(f"{question} [y/N] ").strip().lower() not in ("y", "yes"):
        raise CliError("nothing done")


def queue_stats(args: argparse.Namespace) -> int:
    counts = _call(_admin().stats, home_of(args))
    if args.json:
        print_json(counts)
    else:
        for name in ("remote", "local", "todo", "held"):
            print(f"{name.capitalize():<7} {counts[name]}")
    return 0


def queue_list(args: argparse.Namespace) -> int:
    f = _filter(args)
    items = _call(_admin().list_messages, home_of(args), f.which, f.sender, f.recipient,
                  domain=f.domain, older_than=f.older_than, state=f.state, held=f.held)
    if args.json:
        print_json([m.to_dict() for m in items])
        return 0
    if not items:
        print("NO MESSAGES IN QUEUE")
        return 0
    rows = [{"id": m.id, "date": m.date, "age": f"{m.age_seconds}s", "size": m.size,
             "from": m.sender or "<>",
             "to": ",".join(r.address for r in m.recipients if not r.done),
             "status": m.status + (" held" if m.held else "")} for m in items]
    print_table(rows, ["id", "date", "age", "size", "from", "to", "status"])
    return 0


def queue_show(args: argparse.Namespace) -> int:
    detail = _call(_admin().show, home_of(args), args.id)
    data = detail.to_dict()
    if args.json:
        print_json(data)
        return 0
    message = data.pop("message", "")
    for key, value in data.items():
        if key == "recipients":
            print("recipients:")
            for r in value:
                retry = f", next retry {r['next_retry']}" if r["next_retry"] else ""
                reply = f"\n      last reply: {r['last_reply']}" if r["last_reply"] else ""
                print(f"  {r['address']} ({r['channel']}): {r['state']}, "
                      f"{r['attempts']} attempt(s){retry}{reply}")
            continue
        print(f"{key}: {value}")
    print()
    print(message)
    return 0


# What each action's report says was done.
ACTION_DONE = {"hold": "held", "release": "released", "retry": "due now", "bounce": "bounced",
               "delete": "deleted"}


def queue_action(args: argparse.Namespace) -> int:
    """hold, release, retry, bounce or delete the messages named or matched."""
    action = args.queue_action
    result = _call(_admin().act, home_of(args), action, args.ids, _filter(args),
                   getattr(args, "reason", None))
    if args.json:
        print_json(result)
    else:
        how = {"service": "by the send service", "direct": "directly (send is not running)",
               "none": ""}[result["via"]]
        ids = " ".join(result["ids"])
        print(f"{ACTION_DONE[action]}: {result['count']} message(s)"
              + (f" {how}" if how else "") + (f": {ids}" if ids else ""))
        if result["missing"]:
            print(f"not in the queue: {' '.join(result['missing'])}", file=sys.stderr)
        if not result["done"]:
            print("the send service did not confirm in time; check `mailyard queue list`",
                  file=sys.stderr)
    return 0 if result["done"] else 1


def queue_purge(args: argparse.Namespace) -> int:
    if args.cascade:
        _confirm(f"Delete every message in the {args.which} queue of every node of the "
                 "cluster?", args.yes)
        return cascade.run(args, "queue.purge", queues=(args.which,))
    _confirm(f"Delete every message in the {args.which} queue?", args.yes)
    result = _call(_admin().purge, home_of(args), args.which)
    print(f"purged {args.which}: {result}")
    return 0


def queue_process(args: argparse.Namespace) -> int:
    if args.cascade:
        return cascade.run(args, "queue.process")
    result = _call(_admin().process, home_of(args))
    print(f"queue processing requested: {result}")
    return 0


def queue_send_test(args: argparse.Namespace) -> int:
    result = _call(_admin().send_test, home_of(args), args.to, args.subject, args.body)
    print(f"queued test message {result['id']} to {result['to']}")
    return 0


def queue_reset(args: argparse.Namespace) -> int:
    home = home_of(args)
    _confirm("Move the whole queue aside as queue.bad and start an empty one?", args.yes)
    running: list[str] = []
    if control.supervisor_running(home):
        states = {s.name: s.state for s in control.status(home, with_versions=False)}
        running = [n for n in QUEUE_SERVICES if states.get(n) == "RUNNING"]
        for name in running:
            control.stop(home, name)
    try:
        result = _call(_admin().reset, home)
    finally:
        for name in running:
            control.start(home, name)
    print(f"old queue kept at {result['moved_to']} ({result['messages']} messages); "
          "a fresh queue is in place")
    return 0
