"""Human-readable dates → ISO dates: a translation task that needs no file (standard library only).

"3rd of March 1998", "1998/03/03", "Tuesday, March 3, 98", "03.03.1998", "3/3/98", ... → "1998-03-03".

Every format is unambiguous by its surface form: a year written first is Y/M/D; dots mean D.M.Y;
slashes with the year last mean the US M/D/Y; a two-digit year YY means 19YY for YY ≥ 50 and
20YY below, which is exact because the dates lie in 1950-01-01 .. 2049-12-31. Names of months
and weekdays are English and written out here, not taken from the locale.

Held-out split: a date belongs to the test part when the CRC-32 of its ISO string is divisible by
10 (about 10% of the days). Train and test therefore share no calendar day in any format.
"""

from __future__ import annotations

import datetime as dt
import zlib

import numpy as np

MONTHS = ("January February March April May June July August September October November December").split()
WEEKDAYS = "Monday Tuesday Wednesday Thursday Friday Saturday Sunday".split()
FIRST, LAST = dt.date(1950, 1, 1), dt.date(2049, 12, 31)


def _ordinal(n: int) -> str:
    """1 → "1st", 2 → "2nd", 3 → "3rd", 11 → "11th", 22 → "22nd"."""
    suffix = "th" if 11 <= n % 100 <= 13 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def _formats(d: dt.date) -> list[str]:
    """Every surface form of one date (the generator picks one at random)."""
    D, M, Y, yy = d.day, d.month, d.year, f"{d.year % 100:02d}"
    mon, wd = MONTHS[M - 1], WEEKDAYS[d.weekday()]
    return [
        f"{_ordinal(D)} of {mon} {Y}",
        f"the {_ordinal(D)} of {mon.lower()}, {Y}",
        f"{mon} {D}, {Y}",
        f"{mon} {_ordinal(D)}, {Y}",
        f"{wd}, {mon} {D}, {yy}",
        f"{wd} {D} {mon} {Y}",
        f"{wd[:3]} {D} {mon[:3]} {Y}",
        f"{D} {mon[:3]} {yy}",
        f"{D:02d} {mon} {Y}",
        f"{mon.upper()} {D}, {Y}",
        f"{mon.lower()} {D} {Y}",
        f"{Y}/{M:02d}/{D:02d}",
        f"{Y}-{M}-{D}",
        f"{D:02d}.{M:02d}.{Y}",
        f"{D}.{M}.{yy}",
        f"{M}/{D}/{yy}",
        f"{M:02d}/{D:02d}/{Y}",
        f"{Y}{M:02d}{D:02d}",
    ]


NUM_FORMATS = len(_formats(FIRST))


def is_heldout(d: dt.date) -> bool:
    """The test part of the split: about one day in ten, fixed by a hash of the ISO date."""
    return zlib.crc32(d.isoformat().encode()) % 10 == 0


def date_pairs(n: int, rng: np.random.Generator, split: str = "train") -> list[tuple[str, str]]:
    """n random (human-readable, ISO) pairs from the ``split`` ("train" or "test") days, uniform over days
    and formats.

    Parameters
    ----------
    n : number of pairs.  rng : the generator (explicit randomness).  split : "train" or "test".
    """
    if split not in ("train", "test"):
        raise ValueError(f"split: expected 'train' or 'test', got {split!r}")
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n: expected a positive integer, got {n!r}")
    want_test = split == "test"
    span = (LAST - FIRST).days + 1
    out: list[tuple[str, str]] = []
    while len(out) < n:
        d = FIRST + dt.timedelta(days=int(rng.integers(span)))
        if is_heldout(d) != want_test:
            continue
        forms = _formats(d)
        out.append((forms[int(rng.integers(len(forms)))], d.isoformat()))
    return out
