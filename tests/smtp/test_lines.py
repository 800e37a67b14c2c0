"""The strict CRLF line reader and the DATA dot-unstuffer, driven with bytes (and Hypothesis)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from mailyard.smtp.lines import (
    MAX_COMMAND_LINE,
    DotUnstuffer,
    LineReader,
    OverlongLine,
)

CRLF = b"\r\n"


def dot_stuff(content: bytes) -> bytes:
    """The client's side of RFC 5321 4.5.2 over CRLF lines only, so that bare CR and LF reach
    the unstuffer as they are (our delivery client's stuffer, delivery/smtp_reply.stuff_block,
    also turns a bare LF into CRLF, which this test must not do)."""
    if content and not content.endswith(CRLF):
        content += CRLF
    lines = content.split(CRLF)
    stuffed = [b"." + line if line.startswith(b".") else line for line in lines]
    return CRLF.join(stuffed) + b".\r\n"


def lines_of(reader: LineReader) -> list[bytes | OverlongLine]:
    out: list[bytes | OverlongLine] = []
    while (line := reader.next_line()) is not None:
        out.append(line)
    return out


def unstuff(chunks: list[bytes]) -> tuple[bytes, bytes | None, DotUnstuffer]:
    u = DotUnstuffer()
    content = b""
    rest = None
    for chunk in chunks:
        part, rest = u.feed(chunk)
        content += part
        if rest is not None:
            break
    return content, rest, u


def split_at(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    pieces, last = [], 0
    for p in points:
        pieces.append(data[last:p])
        last = p
    pieces.append(data[last:])
    return pieces


# ---- LineReader ------------------------------------------------------------------------------


def test_only_crlf_ends_a_command_line() -> None:
    r = LineReader()
    r.feed(b"NOOP a\nb\rc\r\nQUIT")
    assert lines_of(r) == [b"NOOP a\nb\rc"]
    r.feed(b"\r\n")
    assert lines_of(r) == [b"QUIT"]


def test_line_of_exactly_the_limit_passes_and_one_more_octet_is_overlong() -> None:
    r = LineReader(MAX_COMMAND_LINE)
    exact = b"x" * (MAX_COMMAND_LINE - 2)
    r.feed(exact + b"\r\n" + exact + b"y\r\nNOOP\r\n")
    got = lines_of(r)
    assert got[0] == exact
    assert isinstance(got[1], OverlongLine) and got[1].length == MAX_COMMAND_LINE + 1
    assert got[2] == b"NOOP"


def test_overlong_line_is_dropped_while_streaming_and_never_buffered() -> None:
    r = LineReader(512)
    for _ in range(1000):  # 1 MB without a line end
        r.feed(b"A" * 1024)
        assert r.next_line() is None
        assert r.buffered <= 1024
    r.feed(b"\r\nQUIT\r\n")
    got = lines_of(r)
    assert isinstance(got[0], OverlongLine) and got[0].length == 1024 * 1000 + 2
    assert got[1] == b"QUIT"


def test_overlong_line_whose_crlf_is_split_between_reads() -> None:
    r = LineReader(16)
    r.feed(b"z" * 40 + b"\r")
    assert r.next_line() is None
    r.feed(b"\nNOOP\r\n")
    got = lines_of(r)
    assert isinstance(got[0], OverlongLine)
    assert got[1] == b"NOOP"


def test_clear_forgets_everything_buffered() -> None:
    r = LineReader()
    r.feed(b"MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\n")
    r.clear()
    assert r.next_line() is None


@given(st.lists(st.binary(max_size=60).map(lambda b: b.replace(b"\r\n", b"")), max_size=20),
       st.lists(st.integers(min_value=0, max_value=10_000), max_size=10))
@settings(max_examples=300, deadline=None)
def test_any_split_of_the_input_gives_the_same_lines(lines: list[bytes], cuts: list[int]) -> None:
    data = b"".join(line + b"\r\n" for line in lines)
    r = LineReader(100)
    got: list[bytes | OverlongLine] = []
    for piece in split_at(data, cuts):
        r.feed(piece)
        got += lines_of(r)
    assert got == lines


# ---- DotUnstuffer ------------------------------------------------------------------------------


def test_message_ends_at_crlf_dot_crlf_and_returns_what_follows() -> None:
    content, rest, u = unstuff([b"Subject: x\r\n\r\nbody\r\n.\r\nQUIT\r\n"])
    assert content == b"Subject: x\r\n\r\nbody\r\n"
    assert rest == b"QUIT\r\n"
    assert u.done and u.stats.size == len(content)


def test_empty_message() -> None:
    content, rest, _ = unstuff([b".\r\n"])
    assert content == b"" and rest == b""


def test_leading_dots_are_removed_once() -> None:
    content, rest, _ = unstuff([b"..\r\n...x\r\n.y\r\n.\r\n"])
    assert content == b".\r\n..x\r\ny\r\n"
    assert rest == b""


SMUGGLING_ENDINGS = [b"\n.\n", b"\r.\r", b"\n.\r\n", b"\r\n.\n", b"\r.\r\n", b"\r\n.\r",
                     b"\r\n\x00.\r\n", b"\n.\r\r\n"]


def test_no_end_of_data_but_crlf_dot_crlf_ends_a_message() -> None:
    for ending in SMUGGLING_ENDINGS:
        data = b"Subject: a\r\n\r\nhello" + ending + b"MAIL FROM:<x@evil.test>\r\n"
        content, rest, u = unstuff([data])
        assert rest is None and not u.done, ending
        content2, rest2, u2 = unstuff([data + b".\r\n"])
        assert rest2 == b"" and u2.done, ending
        assert b"MAIL FROM:<x@evil.test>" in content2, ending


def test_bare_cr_and_lf_are_kept_and_counted() -> None:
    content, rest, u = unstuff([b"a\nb\rc\r\n.\r\n"])
    assert content == b"a\nb\rc\r\n"
    assert (u.stats.bare_lf, u.stats.bare_cr) == (1, 1)


def test_longest_line_counts_octets_as_sent_with_crlf() -> None:
    line = b"." + b"x" * 997  # 998 octets + CRLF = 999 sent... plus the stuffed dot
    _, _, u = unstuff([b"." + line + b"\r\nshort\r\n.\r\n"])
    assert u.stats.longest_line == len(line) + 1 + 2


def test_end_split_into_single_octets() -> None:
    data = b"one\r\n.two\r\n.\r\nNOOP\r\n"
    u = DotUnstuffer()
    content = b""
    rest = None
    for i in range(len(data)):
        part, rest = u.feed(data[i : i + 1])
        content += part
        if rest is not None:
            rest += data[i + 1 :]
            break
    assert content == b"one\r\ntwo\r\n"
    assert rest == b"NOOP\r\n"


def test_a_long_line_streams_without_being_held() -> None:
    u = DotUnstuffer()
    total = 0
    for _ in range(100):
        part, rest = u.feed(b"y" * 10_000)
        total += len(part)
        assert rest is None
    assert total == 1_000_000  # everything already handed on; nothing piles up


message_lines = st.lists(st.binary(max_size=40).map(lambda b: b.replace(b"\r\n", b"")),
                         max_size=25)


@given(message_lines, st.binary(max_size=30),
       st.lists(st.integers(min_value=0, max_value=5000), max_size=12))
@settings(max_examples=400, deadline=None)
def test_stuffing_then_unstuffing_gives_the_message_back(lines: list[bytes], after: bytes,
                                                         cuts: list[int]) -> None:
    message = b"".join(line + b"\r\n" for line in lines)
    wire = dot_stuff(message) + after
    u = DotUnstuffer()
    content = b""
    rest = None
    pieces = split_at(wire, cuts)
    for i, piece in enumerate(pieces):
        part, rest = u.feed(piece)
        content += part
        if rest is not None:
            rest += b"".join(pieces[i + 1 :])
            break
    assert content == message
    assert rest == after


@given(st.binary(max_size=300), st.lists(st.integers(min_value=0, max_value=400), max_size=8))
@settings(max_examples=400, deadline=None)
def test_without_crlf_dot_crlf_the_message_never_ends(data: bytes, cuts: list[int]) -> None:
    while b"\r\n.\r\n" in data:
        data = data.replace(b"\r\n.\r\n", b"\r\n..\r\n")
    if data.startswith(b".\r\n"):
        data = b"x" + data
    u = DotUnstuffer()
    for piece in split_at(data, cuts):
        _, rest = u.feed(piece)
        assert rest is None


def test_received_headers_are_counted_in_the_header_section_only() -> None:
    head = b"Received: a\r\n\tcontinued\r\nRECEIVED:b\r\nreceived : not one\r\nX: y\r\n"
    body = b"\r\nReceived: in the body\r\n"
    _, _, u = unstuff([head + body + b".\r\n"])
    assert u.stats.received == 2
    # Split anywhere, even inside the field name and the blank line, the count is the same.
    data = head + body + b".\r\n"
    for cut in range(1, len(data)):
        _, _, split = unstuff([data[:cut], data[cut:]])
        assert split.stats.received == 2, cut
    # A stuffed dot is not part of the content: ".Received:" counts as one.
    _, _, dotted = unstuff([b"..Received: x\r\nReceived: y\r\n\r\n.\r\n"])
    assert dotted.stats.received == 1


class _LineByLine(DotUnstuffer):
    """The unstuffer with its run-at-once path turned off: every line through the
    line-by-line path, the reference the fast path must agree with."""

    def _whole_lines(self, buf: bytearray, i: int, out: bytearray) -> int:
        return i


# Wire octets rich in what matters: dots at line starts, CRLF, bare CR and LF, Received.
_wire_atoms = st.sampled_from([b".", b"..", b"\r\n", b"\r", b"\n", b"x", b"Received:",
                               b"rEcEiVeD: y", b"\r\n.\r\n", b".\r", b" ", b"abc" * 20])


@given(st.lists(_wire_atoms, max_size=60), st.lists(st.integers(0, 3000), max_size=10))
@settings(max_examples=600, deadline=None)
def test_the_fast_path_agrees_with_line_by_line_on_any_input_and_any_split(
        atoms: list[bytes], cuts: list[int]) -> None:
    wire = b"".join(atoms)
    results = []
    for kind in (DotUnstuffer, _LineByLine):
        u = kind()
        content, rest = b"", None
        for piece in split_at(wire, cuts):
            if u.done:
                break
            part, rest = u.feed(piece)
            content += part
        results.append((content, rest, u.done, u.stats))
    assert results[0] == results[1]
