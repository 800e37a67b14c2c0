"""Every operator and x-filter typed alone at a terminal prints its help (guide 8), seen
through a real pseudo-terminal on standard input, output and error."""

from __future__ import annotations

import os
import pty
import subprocess
import sys
from pathlib import Path

import pytest

from mailyard.logtools.cli import FILTERS, SHOWS, TOPS

SRC = Path(__file__).resolve().parents[2] / "src"


def on_terminal(args: list[str]) -> tuple[int, str]:
    """Run a tool with a pseudo-terminal as its terminal; its status and what it showed."""
    controller, terminal = pty.openpty()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILYARD_")}
    env.update(PYTHONPATH=str(SRC), COLUMNS="100")
    proc = subprocess.Popen([sys.executable, "-m", "mailyard.logtools", *args], stdin=terminal,
                            stdout=terminal, stderr=terminal, env=env, start_new_session=True)
    os.close(terminal)
    chunks = []
    while True:
        try:
            data = os.read(controller, 4096)
        except OSError:  # EIO: the tool closed its side
            break
        if not data:
            break
        chunks.append(data)
    status = proc.wait(timeout=60)
    os.close(controller)
    return status, b"".join(chunks).decode()


@pytest.mark.parametrize("tool", [*SHOWS, *TOPS, *FILTERS])
def test_alone_on_a_terminal_a_tool_prints_its_help(tool: str) -> None:
    status, shown = on_terminal([tool])
    assert status == 0, shown
    assert f"usage: {tool}" in shown
    assert "pipe one into it, or give -f FILE" in shown
    assert "examples:" in shown and "error" not in shown


def test_with_arguments_but_nothing_piped_in_it_says_what_it_reads() -> None:
    status, shown = on_terminal(["top-senders", "--limit", "3"])
    assert status == 2
    assert "usage: top-senders" in shown and "pipe one into it" in shown
