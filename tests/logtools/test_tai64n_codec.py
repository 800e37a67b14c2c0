"""The one tai64n codec: what the node writes, the log tools read back to the same time."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from mailyard import logs
from mailyard.logtools import tai64n


@given(st.floats(min_value=0, max_value=4_000_000_000, allow_nan=False))
def test_a_stamp_written_by_the_node_reads_back_within_a_microsecond(t: float) -> None:
    stamp = logs.tai64n(t)
    assert stamp.startswith("@") and len(stamp) == 25
    assert abs(tai64n.tai64n_to_unix(stamp[1:]) - t) <= 1e-6  # a double holds ~0.5 us at 4e9
    assert logs.parse_tai64n(stamp) == tai64n.tai64n_to_unix(stamp[1:])


def test_the_epoch_is_the_label_daemontools_writes() -> None:
    assert logs.tai64n(0.0) == "@400000000000000a00000000"
    assert tai64n.unix_to_tai64n(1.5) == "400000000000000b1dcd6500"
