"""Shared helpers for the log tool tests: run real pipelines of the tools in a shell.

Every tool name is put on PATH as a two-line wrapper around `python -m mailyard.logtools`, so
a test can write the pipeline exactly as an administrator would type it.  Times are shown in
UTC (TZ=UTC) so expected reports do not depend on the machine's zone.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from mailyard.logtools.cli import TOOLS

FIXTURES = Path(__file__).parent / "fixtures"
SRC = Path(__file__).resolve().parents[2] / "src"


@dataclass
class Result:
    status: int
    out: str
    err: str


@pytest.fixture(scope="session")
def tool_bin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory with one executable per log tool name."""
    bin_dir = tmp_path_factory.mktemp("bin")
    for tool in TOOLS:
        script = bin_dir / tool
        script.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m mailyard.logtools {tool} "$@"\n')
        script.chmod(0o755)
    return bin_dir


@pytest.fixture
def sh(tool_bin: Path, tmp_path: Path):
    """Run a shell command line with the tools on PATH; returns status, stdout, stderr."""

    def run(command: str, stdin: str | None = None, **env: str) -> Result:
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("MAILYARD_")}
        full_env.update(
            PATH=f"{tool_bin}{os.pathsep}{os.environ.get('PATH', '')}",
            PYTHONPATH=f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
            TZ="UTC",
            FIX=str(FIXTURES),
        )
        full_env.update(env)
        proc = subprocess.run(["/bin/sh", "-c", command], input=stdin, capture_output=True,
                              text=True, env=full_env, cwd=tmp_path, timeout=120)
        return Result(proc.returncode, proc.stdout, proc.stderr)

    return run
