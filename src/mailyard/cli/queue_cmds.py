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
    p.add_argument("--from", dest="sender")
    p.add_argument("--to", dest="recipient")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=queue_list)
    p = q.add_parser("show", help="one message: envelope, state, failures, text")
    p.add_argument("id")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=queue_show)
    p = q.add_parser("delete", help="remove one message from the queue")
    p.add_argument("id")
    p.set_defaults(func=queue_delete)
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
        for name in ("remote", "local", "todo"):
            print(f"{name.capitalize():<7} {counts[name]}")
    return 0


def queue_list(args: argparse.Namespace) -> int:
    items = _call(_admin().list_messages, home_of(args), args.which, args.sender,
                  args.recipient)
    if args.json:
        print_json([m.to_dict() for m in items])
        return 0
    if not items:
        print("NO MESSAGES IN QUEUE")
        return 0
    rows = [{"id": m.id, "date": m.date, "age": f"{m.age_seconds}s", "size": m.size,
             "from": m.sender or "<>",
             "to": ",".join(r.address for r in m.recipients if not r.done),
             "status": m.status} for m in items]
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
            value = ", ".join(f"{r['address']} ({r['channel']}{', done' if r['done'] else ''})"
                              for r in value)
        print(f"{key}: {value}")
    print()
    print(message)
    return 0


def queue_delete(args: argparse.Namespace) -> int:
    result = _call(_admin().delete, home_of(args), args.id)
    print(f"deleted {args.id}" + (f" ({result})" if result else ""))
    return 0


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
