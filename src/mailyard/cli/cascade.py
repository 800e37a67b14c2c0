"""`--cascade` of the service and queue commands: run the action on every node, one line each."""

from __future__ import annotations

import sys
from typing import Any

from ..cluster.actions import Action, ActionError, all_done, run_everywhere
from ..cluster.membership import ClusterError
from .common import EXIT_FAILURE, EXIT_USAGE, CliError, home_of


def run(args: Any, kind: str, service: str = "", queues: tuple[str, ...] = ()) -> int:
    """Cascade from this node (the manager); exit status 1 unless every node is done."""
    try:
        action = Action(kind, service, queues)
        outcomes = run_everywhere(home_of(args), action)
    except (ActionError, ClusterError) as exc:
        raise CliError(str(exc), EXIT_USAGE) from None
    width = max(len(o.node) for o in outcomes)
    for outcome in outcomes:
        print(f"{outcome.node:<{width}}  {outcome.state:<11}  {outcome.detail}")
    if all_done(outcomes):
        return 0
    missed = [o.node for o in outcomes if o.state != "done"]
    print(f"mailyard: {action.label}: not done on {len(missed)} of {len(outcomes)} nodes "
          f"({', '.join(missed)})", file=sys.stderr)
    return EXIT_FAILURE
