"""Size limits that clamd's configuration and the INSTREAM client must agree on.

The SMTP message size setting (smtp.message_size_mb) counts the message as it arrives,
attachments already encoded; clamd's StreamMaxLength counts the same bytes, so it is that
size plus a margin for the header lines added on the way (Received, X-Spam-*), never less.
"""

from __future__ import annotations

from typing import Any

from ..settings.registry import value

MB = 1024 * 1024
# Headers our own hops add to a message (Received lines, spam markers) stay well under 1 MB;
# the margin keeps a message exactly at the size limit scannable.
HEADER_MARGIN_BYTES = 1 * MB
# clamd.conf(5): every size option is limited to 4 GB, and ClamAV cannot scan a file of more
# than 2 GB. A stream is scanned as one file, so a stream longer than that could never be
# scanned: with no message size limit, the stream limit is the largest file clamd scans.
CLAMD_MAX_BYTES = 2047 * MB
CLAMD_MAX_SIZE_OPTION = 4095 * MB
# Archives and encoded parts unpack to more than they weigh; clamd's own default MaxScanSize
# (400 MB) is four times its default StreamMaxLength (100 MB). We keep that ratio.
SCAN_SIZE_RATIO = 4
# Below this, scanning archives inside attachments becomes useless; clamd's default floor.
MIN_SCAN_SIZE_BYTES = 100 * MB


def stream_max_bytes(settings: dict[str, Any]) -> int:
    """clamd's StreamMaxLength for this node: message size limit + margin, or clamd's maximum."""
    size_mb = int(value(settings, "smtp.message_size_mb") or 0)
    if size_mb <= 0:
        return CLAMD_MAX_BYTES
    return min(size_mb * MB + HEADER_MARGIN_BYTES, CLAMD_MAX_BYTES)


def max_scan_bytes(settings: dict[str, Any]) -> int:
    """clamd's MaxScanSize: how much unpacked data it reads from one stream."""
    return min(max(stream_max_bytes(settings) * SCAN_SIZE_RATIO, MIN_SCAN_SIZE_BYTES),
               CLAMD_MAX_SIZE_OPTION)


def max_file_bytes(settings: dict[str, Any]) -> int:
    """clamd's MaxFileSize: never below the stream limit, or clamd would answer OK for a
    stream it accepted but did not scan (a message is scanned as one file)."""
    return stream_max_bytes(settings)
