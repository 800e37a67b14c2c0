"""The supervised child: apply the memory limit, then run or exec the service's program.

`python -m mailyard.services.run PROGRAM --home HOME` is what supervisord starts. The memory
limit is applied here, before the real program starts, as daemontools' softlimit does.
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import importlib
import os
import resource
import sys
from collections.abc import Callable
from typing import Any

from ..home import Home
from ..store.settings_store import load_settings
from .catalog import SERVICES


def load(ref: str) -> Callable[..., Any]:
    module, _, name = ref.partition(":")
    target: Callable[..., Any] = getattr(importlib.import_module(module), name)
    return target


# glibc gives each thread that allocates its own malloc arena and reserves 64 MB of address
# space for it (up to 8 arenas per core). Under RLIMIT_AS a threaded Python service (the panel:
# its request worker threads, the cluster agent, the calls of a cascaded action) spends its
# cap on reservations it never fills, and then a real allocation fails (a sign-in's argon2
# check needs 64 MB: the admin is told the password is wrong). Two arenas keep lock contention
# low for these mostly waiting threads; exec'd daemons start with glibc's defaults again.
MALLOC_ARENAS_UNDER_LIMIT = 2
M_ARENA_MAX = -8  # mallopt() parameter number, <malloc.h>


def _limit_malloc_arenas() -> None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt(M_ARENA_MAX, MALLOC_ARENAS_UNDER_LIMIT)
    except (OSError, AttributeError):
        pass  # not glibc: nothing to tune


def apply_memory_limit(megabytes: int) -> None:
    """Cap the address space (RLIMIT_AS, softlimit -a); 0 leaves it unlimited."""
    if megabytes <= 0:
        return
    limit = megabytes * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    _limit_malloc_arenas()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="mailyard-service")
    parser.add_argument("program")
    parser.add_argument("--home")
    args = parser.parse_args(argv)
    home = Home.find(args.home)
    specs = [s for s in SERVICES.values() if s.program == args.program]
    if not specs:
        sys.exit(f"mailyard: no service program named {args.program!r}")
    spec = specs[0]

    settings = load_settings(home)
    # Dovecot limits its own processes (vsz_limit per service); the others get softlimit here.
    if spec.program == spec.name and not spec.internal:
        limit = int(settings[f"service.{spec.name}.memory_limit_mb"])
        apply_memory_limit(limit)
        print(f"mailyard: starting {spec.name}, memory limit "
              f"{f'{limit} MB' if limit else 'none'}", file=sys.stderr, flush=True)
    entry = load(spec.entry)
    if spec.exec_:
        argv_ = [str(a) for a in entry(home)]
        sys.stdout.flush()
        os.execvp(argv_[0], argv_)
    entry(home)


if __name__ == "__main__":
    main()
