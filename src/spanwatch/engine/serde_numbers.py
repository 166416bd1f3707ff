"""serde_json's decision on whether a JSON number is in range, reproduced exactly.

Without its `float_roundtrip` feature, serde_json turns `digits[.digits][e±exp]`
into `f64(significand) * 10^exp` (de.rs `f64_from_parts`), keeping at most the
digits that fit a u64. That is not correctly rounded, so at the top of the
double range it disagrees with orjson (and Python): `1.7976931348623158e308`
overflows there, `1.79769313486231581e308` does not. Only the verdict matters
here (a payload with an out-of-range number is null), so the arithmetic is
replayed exactly, with the same IEEE operations in the same order.
"""

from __future__ import annotations

import math
import re
from typing import Final

_U64_MAX: Final = 2**64 - 1
_I32_MAX: Final = 2**31 - 1
_I32_MIN: Final = -(2**31)
_POW10: Final = tuple(float(f"1e{k}") for k in range(309))
_NUMBER: Final = re.compile(r"(-?)(\d+)(?:\.(\d+))?(?:[eE]([+-]?)(\d+))?")

#: Magnitudes from which orjson's verdict may differ from serde_json's: past
#: u64, serde_json's integer part saturates (and its exponent bookkeeping can
#: refuse `18446744073709551616.0`); near 1e308 its arithmetic overflows.
EDGE: Final = float(2**64)


def _overflows(value: int, digit: int, limit: int) -> bool:
    """serde_json's `overflow!(value * 10 + digit, limit)`."""
    return value >= limit // 10 and (value > limit // 10 or digit > limit % 10)


def serde_number_in_range(token: str) -> bool:
    """Whether serde_json parses the (syntactically valid) number `token`."""
    match = _NUMBER.fullmatch(token)
    if match is None:
        return False
    _sign, integer, fraction, exp_sign, exp_digits = match.groups()
    significand = 0
    exponent = 0
    saturated = False
    for char in integer:  # parse_integer, then parse_long_integer once it would overflow
        digit = ord(char) - 48
        if saturated or _overflows(significand, digit, _U64_MAX):
            saturated = True
            exponent += 1
        else:
            significand = significand * 10 + digit
    if fraction is None and exp_digits is None:
        return True if not saturated else _from_parts(significand, exponent)
    if fraction is not None:  # parse_decimal: from the first digit past a u64, ignored
        for char in fraction:
            digit = ord(char) - 48
            if _overflows(significand, digit, _U64_MAX):
                break
            significand = significand * 10 + digit
            exponent -= 1
        else:
            # "Error if there is not at least one digit after the decimal point",
            # checked as `exponent == 0`: a saturated integer part's exponent can
            # come back to 0 (18446744073709551616.0), and serde_json refuses it.
            if exponent == 0:
                return False
    if exp_digits is not None:  # parse_exponent
        exp = 0
        for char in exp_digits:
            digit = ord(char) - 48
            if _overflows(exp, digit, _I32_MAX):  # parse_exponent_overflow
                return significand == 0 or exp_sign == "-"
            exp = exp * 10 + digit
        exponent = exponent - exp if exp_sign == "-" else exponent + exp
        exponent = max(_I32_MIN, min(_I32_MAX, exponent))  # saturating_add / _sub
    return _from_parts(significand, exponent)


def _from_parts(significand: int, exponent: int) -> bool:
    """de.rs `f64_from_parts`: False where it returns NumberOutOfRange."""
    f = float(significand)
    while True:
        index = abs(exponent) if exponent != _I32_MIN else len(_POW10)  # wrapping_abs
        if index < len(_POW10):
            if exponent >= 0:
                f *= _POW10[index]
                return not math.isinf(f)
            return True
        if f == 0.0:
            return True
        if exponent >= 0:
            return False
        f /= 1e308
        exponent += 308
