"""`LineBuilder`, the class InfluxDB 3 puts in `builtins` for its plugins: one line of
line protocol, built field by field with each value typed as InfluxDB types it.

    line = LineBuilder("cpu").tag("host", "a").float64_field("usage", 5).time_ns(1)
    line.build()  # 'cpu,host=a usage=5.0 1'

Bad input raises at the call that brings it, naming the key, rather than when the
line reaches the database.
"""

import math
from typing import Dict, Optional

INT64_MIN, INT64_MAX = -(1 << 63), (1 << 63) - 1
UINT64_MAX = (1 << 64) - 1


class InfluxDBError(Exception):
    """The base of LineBuilder's errors."""


class InvalidMeasurementError(InfluxDBError, ValueError):
    """A measurement name line protocol cannot carry."""


class InvalidKeyError(InfluxDBError, ValueError):
    """A tag or field key line protocol cannot carry."""


class InvalidLineError(InfluxDBError, ValueError):
    """A line that cannot be built (no field)."""


def _escape(text: str, special: str) -> str:
    # The backslash first, so the escapes added after it are not doubled.
    text = text.replace("\\", "\\\\")
    for c in special:
        text = text.replace(c, "\\" + c)
    return text


def _integer(kind: str, key: str, value) -> int:
    # bool is an int in Python, and InfluxDB writes it as one; a float is not, silently.
    if not isinstance(value, int):
        raise TypeError(f"{kind} field {key!r}: {value!r} is a {type(value).__name__}, not an int")
    return int(value)


class LineBuilder:
    """One line of line protocol. Each method but `build` returns the builder, so calls
    chain; a key given twice keeps its last value, in its first place."""

    def __init__(self, measurement: str):
        if not isinstance(measurement, str) or not measurement:
            raise InvalidMeasurementError(f"the measurement must be a non-empty string, not {measurement!r}")
        if " " in measurement:
            raise InvalidMeasurementError(f"measurement {measurement!r}: a measurement name cannot contain spaces")
        self.measurement = measurement
        self.tags: Dict[str, str] = {}
        self.fields: Dict[str, str] = {}
        self._time_ns: Optional[int] = None

    @staticmethod
    def _check_key(key, kind: str) -> None:
        if not isinstance(key, str) or not key:
            raise InvalidKeyError(f"a {kind} key must be a non-empty string, not {key!r}")
        for c, name in ((" ", "spaces"), (",", "commas"), ("=", "equals signs")):
            if c in key:
                raise InvalidKeyError(f"{kind} key {key!r} cannot contain {name}")

    def tag(self, key: str, value) -> "LineBuilder":
        """A tag; its value is str()-ed."""
        self._check_key(key, "tag")
        text = str(value)
        if not text:
            raise InvalidKeyError(f"tag {key!r}: the value is empty, which line protocol cannot carry")
        self.tags[key] = text
        return self

    def int64_field(self, key: str, value: int) -> "LineBuilder":
        """A signed integer field, written `5i`."""
        self._check_key(key, "field")
        n = _integer("int64", key, value)
        if not INT64_MIN <= n <= INT64_MAX:
            raise ValueError(f"int64 field {key!r}: {n} is out of the int64 range")
        self.fields[key] = f"{n}i"
        return self

    def uint64_field(self, key: str, value: int) -> "LineBuilder":
        """An unsigned integer field, written `5u`; a negative value raises."""
        self._check_key(key, "field")
        n = _integer("uint64", key, value)
        if n < 0:
            raise ValueError(f"uint64 field {key!r} cannot be negative ({n})")
        if n > UINT64_MAX:
            raise ValueError(f"uint64 field {key!r}: {n} is out of the uint64 range")
        self.fields[key] = f"{n}u"
        return self

    def float64_field(self, key: str, value: float) -> "LineBuilder":
        """A float field; a whole number is written `5.0`, so it stays a float."""
        self._check_key(key, "field")
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(f"float64 field {key!r}: {value!r} is a {type(value).__name__}, not a number")
        f = float(value)
        if not math.isfinite(f):
            raise ValueError(f"float64 field {key!r}: {f} is not finite, which line protocol cannot carry")
        self.fields[key] = f"{int(f)}.0" if f.is_integer() else repr(f)
        return self

    def string_field(self, key: str, value: str) -> "LineBuilder":
        """A string field, quoted, with `\\` and `"` escaped."""
        self._check_key(key, "field")
        if not isinstance(value, str):
            raise TypeError(f"string field {key!r}: {value!r} is a {type(value).__name__}, not a str")
        escaped = value.replace("\\", "\\\\").replace('"', '\\"')
        self.fields[key] = f'"{escaped}"'
        return self

    def bool_field(self, key: str, value: bool) -> "LineBuilder":
        """A boolean field, written `t` or `f` (from the value's truth)."""
        self._check_key(key, "field")
        self.fields[key] = "t" if value else "f"
        return self

    def time_ns(self, time_ns: int) -> "LineBuilder":
        """The line's time in nanoseconds since the epoch; without one, the server's."""
        n = _integer("time_ns", "time", time_ns)
        if not INT64_MIN <= n <= INT64_MAX:
            raise ValueError(f"time_ns: {n} is out of the int64 range")
        self._time_ns = n
        return self

    def build(self) -> str:
        """The line; at least one field is needed."""
        if not self.fields:
            raise InvalidLineError(f"at least one field is required: {self.measurement}")
        line = _escape(self.measurement, ", ")
        for k, v in self.tags.items():
            line += f",{_escape(k, ',= ')}={_escape(v, ',= ')}"
        line += " " + ",".join(f"{_escape(k, ',= ')}={v}" for k, v in self.fields.items())
        if self._time_ns is not None:
            line += f" {self._time_ns}"
        return line
