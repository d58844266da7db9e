"""RFC 8785 JSON Canonicalization Scheme (JCS).

Objects are written with their members sorted by the UTF-16 code units of the names,
no whitespace, strings escaped as ECMAScript ``JSON.stringify`` does, and numbers in
ECMAScript Number-to-String form.  Dissemination-log entries must be float-free, so
floats are refused unless ``allow_floats=True``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

from ._errors import CanonicalizationError

__all__ = ["canonical_json"]

_MAX_SAFE_INTEGER = 2**53 - 1
_MAX_DEPTH = 256


def canonical_json(obj: Any, *, allow_floats: bool = False) -> bytes:
    """Return the RFC 8785 canonical UTF-8 encoding of ``obj``.

    Accepts dict (string keys), list, tuple, str, int (within +-(2**53 - 1), the I-JSON
    range), bool and None; floats only when ``allow_floats`` is true.  Anything else raises
    :class:`CanonicalizationError`.
    """
    parts: list[str] = []
    _write(obj, parts, allow_floats, 0)
    text = "".join(parts)
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise CanonicalizationError("string contains a lone surrogate (not valid Unicode)") from exc


def _write(obj: Any, out: list[str], allow_floats: bool, depth: int) -> None:
    if depth > _MAX_DEPTH:
        raise CanonicalizationError(f"value nested deeper than {_MAX_DEPTH} levels")
    if obj is None:
        out.append("null")
    elif obj is True:
        out.append("true")
    elif obj is False:
        out.append("false")
    elif isinstance(obj, str):
        out.append(_string(obj))
    elif isinstance(obj, int):
        if abs(obj) > _MAX_SAFE_INTEGER:
            raise CanonicalizationError(f"integer {obj} is outside the I-JSON range +-(2**53 - 1)")
        out.append(str(int(obj)))
    elif isinstance(obj, float):
        if not allow_floats:
            raise CanonicalizationError(f"float {obj!r} not allowed in float-free canonical JSON")
        out.append(es_number(obj))
    elif isinstance(obj, Mapping):
        names = list(obj)
        for name in names:
            if not isinstance(name, str):
                raise CanonicalizationError(f"object member name {name!r} is not a string")
        names.sort(key=_utf16_key)
        out.append("{")
        for i, name in enumerate(names):
            if i:
                out.append(",")
            out.append(_string(name))
            out.append(":")
            _write(obj[name], out, allow_floats, depth + 1)
        out.append("}")
    elif isinstance(obj, list | tuple):
        out.append("[")
        for i, item in enumerate(obj):
            if i:
                out.append(",")
            _write(item, out, allow_floats, depth + 1)
        out.append("]")
    else:
        raise CanonicalizationError(f"type {type(obj).__name__} has no JSON form")


def _utf16_key(name: str) -> bytes:
    try:
        return name.encode("utf-16-be")
    except UnicodeEncodeError as exc:
        raise CanonicalizationError(
            "object member name contains a lone surrogate (not valid Unicode)"
        ) from exc


def _string(value: str) -> str:
    # json.dumps with ensure_ascii=False escapes exactly what JCS escapes: '"', '\\',
    # \b \f \n \r \t and the other C0 controls as lowercase \u00xx; nothing else.
    return json.dumps(value, ensure_ascii=False)


def es_number(value: float) -> str:
    """ECMAScript Number::toString of a finite double (RFC 8785 section 3.2.2.3)."""
    if not math.isfinite(value):
        raise CanonicalizationError(f"{value!r} has no JSON form")
    if value == 0:
        return "0"  # also -0
    if value < 0:
        return "-" + es_number(-value)
    digits, point = _shortest_digits(value)
    k = len(digits)
    n = point
    if k <= n <= 21:
        return digits + "0" * (n - k)
    if 0 < n <= 21:
        return digits[:n] + "." + digits[n:]
    if -6 < n <= 0:
        return "0." + "0" * (-n) + digits
    exp = n - 1
    sign = "+" if exp >= 0 else "-"
    mantissa = digits if k == 1 else digits[0] + "." + digits[1:]
    return f"{mantissa}e{sign}{abs(exp)}"


def _shortest_digits(value: float) -> tuple[str, int]:
    """Shortest round-trip decimal digits of ``value`` > 0 and the decimal point position.

    ``value == 0.d1d2...dk * 10**point``.  Python's ``repr`` yields the shortest digit
    string that round-trips, correctly rounded, which is what ECMAScript requires.
    """
    text = repr(value)
    mantissa, _, exp_text = text.partition("e")
    exponent = int(exp_text) if exp_text else 0
    whole, _, frac = mantissa.partition(".")
    digits = whole + frac
    point = len(whole) + exponent
    stripped = digits.lstrip("0")
    point -= len(digits) - len(stripped)
    return stripped.rstrip("0"), point
