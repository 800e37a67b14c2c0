"""Shares of a py-spy raw profile (`py-spy record --format raw`): by function, inclusive
(the share of samples with that function anywhere on the stack) and as the innermost frame.

Not a test. Run: `python bench/profile_summary.py PROFILE.txt [--top N]`.
"""

from __future__ import annotations

import argparse
import collections
import re

# "name (path/to/file.py:123)" -> "name (file path below src/ or the library's)"
_FRAME = re.compile(r"^(.*?) \((.*?)(?::\d+)?\)$")


def frame_name(frame: str) -> str:
    m = _FRAME.match(frame)
    if not m:
        return frame
    name, path = m.groups()
    path = path.split("/src/", 1)[-1]
    return f"{name} ({path})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("profile")
    parser.add_argument("--top", type=int, default=30)
    args = parser.parse_args()
    inclusive: collections.Counter[str] = collections.Counter()
    innermost: collections.Counter[str] = collections.Counter()
    total = 0
    with open(args.profile, encoding="utf-8", errors="replace") as f:
        for line in f:
            stack, _, count = line.rstrip("\n").rpartition(" ")
            if not stack or not count.isdigit():
                continue
            n = int(count)
            total += n
            frames = [frame_name(x) for x in stack.split(";")]
            for name in set(frames):
                inclusive[name] += n
            innermost[frames[-1]] += n
    print(f"{total} samples")
    for title, counter in (("inclusive", inclusive), ("innermost", innermost)):
        print(f"-- {title}")
        for name, n in counter.most_common(args.top):
            print(f"{100 * n / max(1, total):5.1f} %  {name}")


if __name__ == "__main__":
    main()
