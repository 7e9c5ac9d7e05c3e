"""How times and numbers are written for people: local date and time with the zone named, numbers
such as a strength without a trailing ``.0`` or a run of zeros, shares as percentages and changes as
percentage points (one formatter each, used by the pages, the summary card, the charts and the
report alike), a duration as ``m:ss``, and a group by its name.

The store keeps UTC ISO strings (``2026-11-30T10:30:01Z``); pages pass the browser's time zone
(Streamlit's ``st.context.timezone``, an IANA name such as ``Asia/Tokyo``), and when it is unknown
or not a zone this machine knows, times are shown in UTC and say so.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError


def zone(tz: str | None) -> ZoneInfo | None:
    """The named IANA zone, or None (meaning UTC) when it is missing or unknown here."""
    if not tz or not isinstance(tz, str):
        return None
    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        return None


def zone_name(tz: str | None) -> str:
    """The zone times are shown in, for a column heading: the IANA name, or ``UTC``."""
    z = zone(tz)
    return z.key if z is not None else "UTC"


def local_time(ts: str | None, tz: str | None, *, with_zone: bool = True, seconds: bool = False) -> str:
    """A stored UTC time as local date and time: ``2026-11-30 19:30 JST`` (``UTC`` when the zone is
    unknown). Empty for no time; a value that is not a stored time is returned as it is."""
    if not ts:
        return ""
    try:
        when = datetime.strptime(ts, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    except (TypeError, ValueError):
        return str(ts)
    z = zone(tz)
    local = when.astimezone(z) if z is not None else when
    text = local.strftime("%Y-%m-%d %H:%M:%S" if seconds else "%Y-%m-%d %H:%M")
    if not with_zone:
        return text
    return f"{text} {local.strftime('%Z') if z is not None else 'UTC'}"


def number(x: float | int | str | None) -> str:
    """A setting or strength for people: ``1,000`` not ``1000.0``, ``1e5`` not ``100000.0``,
    ``0.003`` and ``1e-5``; text (``auto``) as it is; ``–`` for none."""
    if x is None:
        return "–"
    if isinstance(x, str):
        try:
            x = float(x)
        except ValueError:
            return x
    if isinstance(x, bool) or not math.isfinite(float(x)):
        return str(x)
    x = float(x)
    if x == 0:
        return "0"
    if 1e-3 <= abs(x) < 1e5:
        return f"{x:,.6g}"
    mantissa, exponent = f"{x:.3e}".split("e")
    mantissa = mantissa.rstrip("0").rstrip(".")
    return f"{mantissa}e{int(exponent)}"


def mebibytes(n: int) -> str:
    """A size in bytes as MB (2²⁰ bytes) with one decimal, without the unit: ``1.1``."""
    return f"{n / 2**20:.1f}"


def finite(x: float | int | str | None) -> float | None:
    """``x`` as a float, or None when it is missing or not a number (NaN): what the formatters below
    show as ``–``."""
    if x is None:
        return None
    x = float(x)
    return None if math.isnan(x) else x


def percent(share: float | None, digits: int = 1) -> str:
    """A share (0.123) as a percentage: ``12.3%`` (``12%`` with ``digits=0``); ``–`` for none."""
    x = finite(share)
    return "–" if x is None else f"{100 * x:.{digits}f}%"


def points(change: float | None, digits: int = 1, signed: bool = False) -> str:
    """A difference of shares (0.123) in percentage points: ``12.3``, or ``+12.3`` with ``signed``;
    ``–`` for none."""
    x = finite(change)
    return "–" if x is None else f"{100 * x:{'+' if signed else ''}.{digits}f}"


def duration(seconds: float | None) -> str:
    """A time left as minutes and seconds, ``2:05``; ``…`` while it is not known yet."""
    if seconds is None:
        return "…"
    seconds = int(round(seconds))
    return f"{seconds // 60}:{seconds % 60:02d}"


def group_name(g: dict) -> str:
    """A group as people read it: ``two · red`` (just the label when there is no attribute)."""
    a = g.get("attribute")
    return f"{g['label']} · {a}" if a not in (None, "", "(none)") else str(g["label"])
