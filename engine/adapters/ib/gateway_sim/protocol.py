"""TWS socket protocol: framing, field encoding, the handshake and message ids.

Wire format (both directions, after the client's 4-byte ``API\\0`` greeting): a big-endian ``uint32`` payload
length, then the payload: ASCII fields each terminated by ``\\0``. Booleans are ``"1"``/``"0"``; an unset
number is sent as the empty string.

The server version is the highest the client accepts, capped at :data:`MAX_SERVER_VERSION` (178): every
message this package writes has the field layout of that version range (157-178), and a client that
advertises at most 178 never sees the layouts that change from 194 on (error time, historical-data end,
protobuf ids).
"""

from __future__ import annotations

import asyncio
import re
import struct
from datetime import datetime, timezone
from enum import IntEnum

__all__ = [
    "GREETING", "MIN_SERVER_VERSION", "MAX_SERVER_VERSION", "In", "Out", "ProtocolError",
    "frame", "encode", "read_frame", "read_handshake", "negotiate", "connection_time", "ib_time",
]

GREETING = b"API\0"
MIN_SERVER_VERSION = 157
MAX_SERVER_VERSION = 178
#: a frame longer than this is refused (TWS's own limit is 16 MB; a simulator never needs more)
MAX_FRAME = 16 * 1024 * 1024
_VERSIONS = re.compile(r"^v(\d+)(?:\.\.(\d+))?(?:\s+(.*))?$")


class ProtocolError(Exception):
    """The peer did not speak the TWS protocol (bad greeting, unsupported versions, oversized frame)."""


class In(IntEnum):
    """Client -> server message ids (the first field of every request)."""

    REQ_MKT_DATA = 1
    CANCEL_MKT_DATA = 2
    PLACE_ORDER = 3
    CANCEL_ORDER = 4
    REQ_OPEN_ORDERS = 5
    REQ_ACCOUNT_UPDATES = 6
    REQ_EXECUTIONS = 7
    REQ_IDS = 8
    REQ_CONTRACT_DETAILS = 9
    REQ_AUTO_OPEN_ORDERS = 15
    REQ_ALL_OPEN_ORDERS = 16
    REQ_MANAGED_ACCTS = 17
    REQ_HISTORICAL_DATA = 20
    CANCEL_HISTORICAL_DATA = 25
    REQ_CURRENT_TIME = 49
    REQ_REAL_TIME_BARS = 50
    CANCEL_REAL_TIME_BARS = 51
    REQ_GLOBAL_CANCEL = 58
    REQ_MARKET_DATA_TYPE = 59
    REQ_POSITIONS = 61
    REQ_ACCOUNT_SUMMARY = 62
    CANCEL_ACCOUNT_SUMMARY = 63
    CANCEL_POSITIONS = 64
    START_API = 71
    REQ_ACCOUNT_UPDATES_MULTI = 76
    CANCEL_ACCOUNT_UPDATES_MULTI = 77
    REQ_COMPLETED_ORDERS = 99


class Out(IntEnum):
    """Server -> client message ids."""

    ORDER_STATUS = 3
    ERR_MSG = 4
    OPEN_ORDER = 5
    ACCT_VALUE = 6
    PORTFOLIO_VALUE = 7
    ACCT_UPDATE_TIME = 8
    NEXT_VALID_ID = 9
    CONTRACT_DATA = 10
    EXECUTION_DATA = 11
    MANAGED_ACCTS = 15
    CURRENT_TIME = 49
    CONTRACT_DATA_END = 52
    OPEN_ORDER_END = 53
    ACCT_DOWNLOAD_END = 54
    EXECUTION_DATA_END = 55
    COMMISSION_REPORT = 59
    POSITION_DATA = 61
    POSITION_END = 62
    ACCOUNT_SUMMARY = 63
    ACCOUNT_SUMMARY_END = 64
    ACCOUNT_UPDATE_MULTI = 73
    ACCOUNT_UPDATE_MULTI_END = 74
    COMPLETED_ORDER = 101
    COMPLETED_ORDERS_END = 102


def _text(value: object) -> str:
    """One field as TWS writes it: None -> empty, bool -> 1/0, float without a spurious ``.0`` on integers."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, float):
        # repr round-trips exactly; whole numbers go out as integers (TWS sends "2", not "2.0", for sizes).
        return str(int(value)) if value.is_integer() and abs(value) < 1e15 else repr(value)
    return str(value)


def encode(*fields: object) -> bytes:
    """The payload of one message (no length prefix)."""
    return "".join(_text(f) + "\0" for f in fields).encode()


def frame(*fields: object) -> bytes:
    """One complete framed message: length prefix + payload."""
    payload = encode(*fields)
    return struct.pack(">I", len(payload)) + payload


async def read_frame(reader: asyncio.StreamReader) -> list[str]:
    """Read one framed message and split it into fields (the trailing terminator's empty field dropped)."""
    (size,) = struct.unpack(">I", await reader.readexactly(4))
    if size > MAX_FRAME:
        raise ProtocolError(f"frame of {size} bytes exceeds {MAX_FRAME}")
    fields = (await reader.readexactly(size)).decode(errors="backslashreplace").split("\0")
    fields.pop()
    return fields


async def read_handshake(reader: asyncio.StreamReader) -> tuple[int, int, str]:
    """Read ``API\\0`` + ``"v<min>..<max> [options]"``; return ``(min_version, max_version, options)``."""
    greeting = await reader.readexactly(len(GREETING))
    if greeting != GREETING:
        raise ProtocolError(f"expected the API greeting, got {greeting!r}")
    (size,) = struct.unpack(">I", await reader.readexactly(4))
    if size > 1024:
        raise ProtocolError(f"version announcement of {size} bytes")
    match = _VERSIONS.match((await reader.readexactly(size)).decode(errors="replace").strip("\0"))
    if match is None:
        raise ProtocolError("version announcement is not 'v<min>..<max>'")
    low = int(match[1])
    high = int(match[2] or match[1])
    return low, high, match[3] or ""


def negotiate(low: int, high: int) -> int:
    """The server version for a client that accepts ``[low, high]``: ``min(high, 178)``.

    Raises
    ------
    ProtocolError
        The ranges do not overlap.
    """
    version = min(high, MAX_SERVER_VERSION)
    if version < max(low, MIN_SERVER_VERSION):
        raise ProtocolError(f"client versions {low}..{high} do not overlap {MIN_SERVER_VERSION}..{MAX_SERVER_VERSION}")
    return version


def connection_time(now: datetime | None = None) -> str:
    """The connection time field of the handshake reply, ``YYYYMMDD HH:MM:SS UTC``."""
    return ib_time(now or datetime.now(timezone.utc))


def ib_time(moment: datetime) -> str:
    """A tz-aware instant in the ``YYYYMMDD HH:MM:SS UTC`` form ib_async parses with its zone."""
    return moment.astimezone(timezone.utc).strftime("%Y%m%d %H:%M:%S") + " UTC"
