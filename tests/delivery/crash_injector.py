"""A load generator for the crash tests: injects messages and prints each one it committed.

Run as `python crash_injector.py QUEUE_DIR SEED COUNT RECIPIENTS...`; prints
`OK <token> <qid> <rcpt,rcpt>` after each commit returned. Killing it at any moment must leave
only whole, committed messages behind.
"""

from __future__ import annotations

import hashlib
import random
import sys

from mailyard.queue import Envelope, Queue


def make_message(rng: random.Random, token: str) -> bytes:
    lines = []
    for _ in range(rng.randrange(3, 600)):
        word = rng.choice(["plain", ".dot first", "..two dots", "", "tab\there", "é utf-8"])
        lines.append(f"{word} {rng.randrange(10**9)}")
    body = ("\n".join(lines) + "\n").encode()
    digest = hashlib.sha256(body).hexdigest()
    head = (f"From: load@remote.test\nSubject: crash {token}\nX-Token: {token}\n"
            f"X-Body-SHA256: {digest}\n\n").encode()
    return head + body


def main() -> None:
    queue_dir, seed, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    choices = sys.argv[4:]
    rng = random.Random(seed)
    q = Queue(queue_dir)
    for n in range(count):
        token = f"{seed}-{n}"
        rcpts = rng.sample(choices, rng.randrange(1, 4))
        data = make_message(rng, token)
        with q.open_message() as w:
            for start in range(0, len(data), 997):
                w.write(data[start:start + 997])
            qid = w.commit(Envelope(sender="load@remote.test", recipients=rcpts))
        print(f"OK {token} {qid} {','.join(rcpts)}", flush=True)


if __name__ == "__main__":
    main()
