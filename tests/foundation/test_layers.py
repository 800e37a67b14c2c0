"""The import graph of src/mailyard: no cycle, and the layers import one way (issue 20).

Every module is parsed (not imported); each `import` statement anywhere in it counts, in a
function too, except those under `if TYPE_CHECKING:` (annotations only). The layers, from the
bottom (README, code layout):

  0 primitives   children, durable, fssync, sync_process, safefs, logs, home, address
                 (with the blacklist and spam list entry grammars), quota, mailboxes, and
                 the two leaf modules of services/ that everything may use (privileges,
                 errors)
  1 settings     the registry and its types: no store access
  2 store        models, accounts, setting rows, the in-process view, the cache (with the
                 store's outages, the away marker and the store's health)
  3 queue        the on-disk queue
  4 services     catalog, supervision, TLS, control, applying settings, node set-up, and
                 usage (a mailbox's use of its quota, from the store and the Maildir)
  5 parts        smtp, delivery, filters, mda, logtools, cluster, mailauth
  6 top          panel, cli, the delivery trail, the package's entry point

A module may import its own layer or a lower one. A part may import another part only through
that part's named interface (PART_INTERFACES). What is still wrong today is listed in PENDING,
each with its reason, so the test fails on any new violation and on a pending one that has
been fixed (strike it from the list then).
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src"
PACKAGE = "mailyard"

PRIMITIVES = {"mailyard", "mailyard.children", "mailyard.durable", "mailyard.fssync",
              "mailyard.sync_process",
              "mailyard.safefs", "mailyard.logs", "mailyard.home", "mailyard.address",
              "mailyard.blacklist", "mailyard.spam_lists",
              "mailyard.quota", "mailyard.mailboxes", "mailyard.services.privileges",
              "mailyard.services.errors"}
PARTS = ("smtp", "delivery", "filters", "mda", "logtools", "cluster", "mailauth")
LAYERS = {"settings": 1, "store": 2, "queue": 3, "services": 4, "nodeinit": 4,
          # mailbox usage reads the store and the Maildirs: a service of its own, which local
          # delivery (the 90 % warning), the panel and the CLI use
          "usage": 4,
          **{part: 5 for part in PARTS},
          # the delivery trail reads the logs of smtp and send through the log tools: above
          # the parts, beside the panel and the CLI that show it
          "trail": 6, "trail_logs": 6,
          "panel": 6, "cli": 6, "__main__": 6}

# What a part offers the other parts. mailauth is a library of mail authentication that smtp
# and delivery both use (the package is the interface); the filters offer the SMTP-level scan
# and their verdicts to smtp, the mailbox scan to local delivery, and Bayes training from the
# IMAP folders to the send service.
PART_INTERFACES: dict[str, set[str] | None] = {
    "mailauth": None,
    # the one table of SMTP reply codes and texts: the filters' verdicts are entries of it
    "smtp": {"mailyard.smtp", "mailyard.smtp.replies"},
    "filters": {"mailyard.filters.smtp_level", "mailyard.filters.policy",
                "mailyard.filters.mailbox", "mailyard.filters.training"},
}

# (importer, imported): violations known today, each with what would cut it.
PENDING: dict[tuple[str, str], str] = {
    ("mailyard.services.control", "mailyard.filters.clamd"):
        "clamd's start hook: the service catalog should own per-service start hooks",
    ("mailyard.services.control", "mailyard.mda.dovecot"):
        "Dovecot's listeners reset: the service catalog should own per-service behaviour",
    ("mailyard.cluster.manager_token", "mailyard.panel.tokens"):
        "the token codec is the panel's; shared by both, it belongs in the store or services",
}


def _modules() -> dict[str, Path]:
    found = {}
    for path in (SRC / PACKAGE).rglob("*.py"):
        if "migrations" in path.parts:
            continue  # Alembic's scripts: run by Alembic, imported by nothing of ours
        name = ".".join(path.relative_to(SRC).with_suffix("").parts)
        found[name.removesuffix(".__init__")] = path
    return found


def _targets(modules: dict[str, Path], current: str, node: ast.Import | ast.ImportFrom) -> set[str]:
    if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
    else:
        if node.level:
            package = current.split(".")
            if modules[current].name != "__init__.py":
                package = package[:-1]
            package = package[: len(package) - (node.level - 1)]
            base = ".".join(package + ([node.module] if node.module else []))
        else:
            base = node.module or ""
        names = [base] + [f"{base}.{a.name}" for a in node.names]
    # `import mailyard.x.y` names mailyard.x.y; keep the longest name that is a module of ours.
    return {n for n in names if n in modules}


def import_graph() -> dict[str, set[str]]:
    modules = _modules()
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(), str(path))
        typing_only = {id(inner) for node in ast.walk(tree)
                       if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
                       for inner in ast.walk(node)}
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)) and id(node) not in typing_only:
                for target in _targets(modules, name, node):
                    # a package's __init__ is imported on the way; it is not an edge of its own
                    if target != name and not name.startswith(target + "."):
                        graph[name].add(target)
    return graph


def layer_of(module: str) -> int:
    if module in PRIMITIVES:
        return 0
    top = module.split(".")[1]
    return LAYERS[top]


def part_of(module: str) -> str | None:
    top = module.split(".")[1] if "." in module else ""
    return top if top in PARTS else None


def violations(graph: dict[str, set[str]]) -> dict[tuple[str, str], str]:
    found = {}
    for importer, imported in ((a, b) for a, targets in graph.items() for b in targets):
        if layer_of(imported) > layer_of(importer):
            found[(importer, imported)] = "imports a higher layer"
            continue
        mine, theirs = part_of(importer), part_of(imported)
        if mine and theirs and mine != theirs:
            interface = PART_INTERFACES.get(theirs, set())
            if interface is not None and imported not in interface:
                found[(importer, imported)] = f"imports the internals of part {theirs}"
    return found


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[list[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))
            elif child not in index:
                index[child] = low[child] = len(index)
                stack.append(child)
                on_stack.add(child)
                work.append((child, iter(sorted(graph[child]))))
            elif child in on_stack:
                low[node] = min(low[node], index[child])
    return found


def test_every_module_has_a_layer() -> None:
    unplaced = [m for m in import_graph() if m not in PRIMITIVES and m.split(".")[1] not in LAYERS]
    assert unplaced == [], f"modules in no layer (add them to LAYERS or PRIMITIVES): {unplaced}"


def test_the_import_graph_has_no_cycle() -> None:
    assert cycles(import_graph()) == []


def test_layers_import_one_way() -> None:
    found = violations(import_graph())
    new = {edge: why for edge, why in found.items() if edge not in PENDING}
    assert new == {}, "imports against the layers: " + "; ".join(
        f"{a} -> {b} ({why})" for (a, b), why in sorted(new.items()))


def test_pending_violations_are_still_real() -> None:
    found = violations(import_graph())
    fixed = sorted(edge for edge in PENDING if edge not in found)
    assert fixed == [], f"fixed, so strike them from PENDING: {fixed}"


def test_the_checker_sees_a_cycle_and_an_upward_import() -> None:
    """The checks themselves can fail: a made-up graph with both faults is caught."""
    graph = {"mailyard.store.a": {"mailyard.panel.b"}, "mailyard.panel.b": {"mailyard.store.a"},
             "mailyard.smtp.c": {"mailyard.delivery.d"}, "mailyard.delivery.d": set()}
    assert cycles(graph) == [["mailyard.panel.b", "mailyard.store.a"]]
    found = violations(graph)
    assert found[("mailyard.store.a", "mailyard.panel.b")] == "imports a higher layer"
    assert found[("mailyard.smtp.c", "mailyard.delivery.d")] == "imports the internals of part delivery"
    assert ("mailyard.panel.b", "mailyard.store.a") not in found
