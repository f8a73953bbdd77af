"""Wire format shared by the in-process and gRPC transports: one code path, so both are bit-identical.

A message is ``uint32 LE header length | JSON header | raw little-endian arrays`` (never pickle). The header lists
``arrays: [[name, dtype, shape], ...]`` in payload order. ``validate_*`` check dtype, shape, bit count, zero
padding, finite values and the echoed party/epoch/step, raising MalformedMessageError(party, field, expected, got).
"""

from __future__ import annotations

import json
import struct
from typing import Any

import numpy as np

from .errors import MalformedMessageError

PROTOCOL_VERSION = 1
DTYPES = {"uint8": np.dtype("<u1"), "int64": np.dtype("<i8"), "float32": np.dtype("<f4")}
KINDS = ("hello", "align", "step", "embed", "checkpoint", "state")
MAX_HEADER = 16 * 2 ** 20


def encode(header: dict[str, Any], arrays: dict[str, np.ndarray] | None = None) -> bytes:
    """Header dict plus named arrays -> bytes."""
    arrays = arrays or {}
    specs, blobs = [], []
    for name, a in arrays.items():
        a = np.asarray(a)
        kind = {"u": "uint8", "i": "int64", "f": "float32"}.get(a.dtype.kind)
        if kind is None or (kind == "uint8" and a.dtype.itemsize != 1):
            kind = "int64" if a.dtype.kind in "iu" else None
        if kind is None:
            raise TypeError(f"array {name!r} has unsupported dtype {a.dtype}")
        a = np.ascontiguousarray(a, dtype=DTYPES[kind])
        specs.append([name, kind, list(a.shape)])
        blobs.append(a.tobytes())
    head = json.dumps({**header, "arrays": specs}, sort_keys=True, separators=(",", ":")).encode()
    return struct.pack("<I", len(head)) + head + b"".join(blobs)


def decode(data: bytes, party: int | None = None) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Bytes -> (header, arrays); any inconsistency is a MalformedMessageError naming ``party``."""
    if len(data) < 4:
        raise MalformedMessageError(party, "length", ">= 4 bytes", len(data))
    (n,) = struct.unpack_from("<I", data)
    if n > MAX_HEADER or 4 + n > len(data):
        raise MalformedMessageError(party, "header length", f"<= {len(data) - 4}", n)
    try:
        header = json.loads(data[4:4 + n])
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise MalformedMessageError(party, "header", "JSON object", f"undecodable ({exc.__class__.__name__})") from None
    if not isinstance(header, dict) or not isinstance(header.get("arrays"), list):
        raise MalformedMessageError(party, "header", "object with 'arrays'", type(header).__name__)
    off, arrays = 4 + n, {}
    for spec in header.pop("arrays"):
        try:
            name, kind, shape = spec
            dt = DTYPES[kind]
            shape = tuple(int(s) for s in shape)
            if any(s < 0 for s in shape):
                raise ValueError
        except (ValueError, TypeError, KeyError):
            raise MalformedMessageError(party, "array spec", "[name, uint8|int64|float32, shape]", spec) from None
        size = int(np.prod(shape, dtype=np.int64)) * dt.itemsize
        if off + size > len(data):
            raise MalformedMessageError(party, f"{name} payload", f"{size} bytes", f"{len(data) - off}")
        arrays[name] = np.frombuffer(data, dtype=dt, count=size // dt.itemsize, offset=off).reshape(shape)
        off += size
    if off != len(data):
        raise MalformedMessageError(party, "trailing bytes", 0, len(data) - off)
    return header, arrays


def expect(header: dict[str, Any], who: int | None, **fields: Any) -> None:
    """The echoed fields (type, party, epoch, step, ...) must equal what was asked."""
    for k, v in fields.items():
        if header.get(k) != v:
            raise MalformedMessageError(who, k, v, header.get(k))


def validate_array(arrays: dict[str, np.ndarray], name: str, party: int | None, dtype: str,
                   shape: tuple[int | None, ...]) -> np.ndarray:
    """Presence, dtype and shape (None = any size) of one array; floats must be finite."""
    if name not in arrays:
        raise MalformedMessageError(party, name, "present", "missing")
    a = arrays[name]
    if a.dtype != DTYPES[dtype]:
        raise MalformedMessageError(party, f"{name} dtype", dtype, str(a.dtype))
    if a.ndim != len(shape) or any(s is not None and s != t for s, t in zip(shape, a.shape)):
        raise MalformedMessageError(party, f"{name} shape", tuple(shape), tuple(a.shape))
    if a.dtype.kind == "f" and not np.isfinite(a).all():
        raise MalformedMessageError(party, f"{name} values", "finite", f"{int((~np.isfinite(a)).sum())} non-finite")
    return a


def validate_message(arrays: dict[str, np.ndarray], party: int | None, wire: str, width: int, n: int) -> np.ndarray:
    """A party's forward message for n rows -> float32 (n, width): packed bits (zero padding) or float32."""
    if wire == "bits":
        a = validate_array(arrays, "msg", party, "uint8", (n, (width + 7) // 8))
        from .codes import unpack_bits

        try:
            return unpack_bits(a, width)
        except ValueError as exc:
            raise MalformedMessageError(party, "msg padding bits", 0, str(exc)) from None
    return validate_array(arrays, "msg", party, "float32", (n, width)).copy()


def validate_positions(arrays: dict[str, np.ndarray], name: str, party: int | None, rows: int) -> np.ndarray:
    """Row positions: int64 vector within [0, rows)."""
    a = validate_array(arrays, name, party, "int64", (None,))
    if len(a) and (a.min() < 0 or a.max() >= rows):
        raise MalformedMessageError(party, f"{name} range", f"[0, {rows})", f"[{a.min()}, {a.max()}]")
    return a
