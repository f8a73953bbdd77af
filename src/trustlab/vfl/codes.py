"""Class codes O in {+-1}^{C x L} and the bit-packed wire format of hash messages."""

from __future__ import annotations

import math
import warnings

import numpy as np

from trustlab.runtime import ConfigError


def class_codes(C: int, L: int, kind: str = "bernoulli", seed: int = 0) -> np.ndarray:
    """Codes for C classes, int8 in {+-1}, shape (C, L).

    ``bernoulli``: i.i.d. p=1/2 bits, duplicate rows redrawn (needs 2^L >= C).
    ``hadamard``: rows 1..C of the Sylvester matrix H_L (balanced, pairwise orthogonal; L a power of 2, L >= C;
    at L = C rows 0..C-1 with a warning since row 0 is all ones), columns permuted by ``seed``.
    """
    rng = np.random.default_rng(seed)
    if kind == "bernoulli":
        if L < 64 and 2 ** L < C:
            need = math.ceil(math.log2(C))
            raise ConfigError(f"code_len L={L} gives only 2^{L}={2 ** L} codes for {C} classes",
                              hint=f"set defence.code_len to at least {need}")
        codes = np.where(rng.random((C, L)) < 0.5, 1, -1).astype(np.int8)
        while True:
            _, first = np.unique(codes, axis=0, return_index=True)
            dup = np.setdiff1d(np.arange(C), first)
            if len(dup) == 0:
                return codes
            codes[dup] = np.where(rng.random((len(dup), L)) < 0.5, 1, -1)
    if kind == "hadamard":
        if L < 1 or L & (L - 1):
            raise ConfigError(f"hadamard class codes need code_len a power of 2, got {L}",
                              hint=f"set defence.code_len to {1 << max(C - 1, 1).bit_length()}")
        if L < C:
            raise ConfigError(f"hadamard class codes need code_len >= {C} classes, got {L}",
                              hint=f"set defence.code_len to {1 << (C - 1).bit_length()}")
        H = sylvester(L)
        if L == C:
            warnings.warn(f"hadamard codes at L = C = {C} include the all-ones row 0 (unbalanced)", stacklevel=2)
            rows = H[:C]
        else:
            rows = H[1:C + 1]
        return rows[:, rng.permutation(L)].astype(np.int8)
    raise ConfigError(f"class_codes must be bernoulli or hadamard, got {kind!r}")


def sylvester(L: int) -> np.ndarray:
    """Sylvester-Hadamard matrix H_L (L a power of 2): H_{2n} = [[H, H], [H, -H]]."""
    H = np.ones((1, 1), dtype=np.int8)
    while len(H) < L:
        H = np.block([[H, H], [H, -H]]).astype(np.int8)
    return H


def min_hamming(codes: np.ndarray) -> int:
    """Smallest Hamming distance between two distinct code rows."""
    C, L = codes.shape
    d = (L - codes.astype(np.int64) @ codes.T.astype(np.int64)) // 2
    return int(d[~np.eye(C, dtype=bool)].min()) if C > 1 else L


def pack_bits(h: np.ndarray) -> np.ndarray:
    """{+-1} (or any sign) rows -> ``np.packbits(h > 0, axis=1)``: ceil(L/8) bytes a row, padding bits 0."""
    return np.packbits(np.asarray(h) > 0, axis=1)


def unpack_bits(b: np.ndarray, L: int) -> np.ndarray:
    """Packed rows -> float32 {+-1} of width L. Non-zero padding bits raise ValueError."""
    b = np.asarray(b, dtype=np.uint8)
    if b.ndim != 2 or b.shape[1] != (L + 7) // 8:
        raise ValueError(f"packed codes must have shape (n, {(L + 7) // 8}) for L={L}, got {b.shape}")
    bits = np.unpackbits(b, axis=1)
    if bits[:, L:].any():
        raise ValueError(f"padding bits after bit {L} are not zero")
    return np.where(bits[:, :L] > 0, 1.0, -1.0).astype(np.float32)


_POPCOUNT = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)


def hamming_packed(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise Hamming distance of packed codes: popcount(a XOR b) summed over bytes (broadcasts)."""
    return _POPCOUNT[np.bitwise_xor(np.asarray(a, np.uint8), np.asarray(b, np.uint8))].sum(axis=-1).astype(np.int64)


def hamming_from_cos(cos: np.ndarray, L: int) -> np.ndarray:
    """For +-1 vectors d_H = L (1 - cos) / 2."""
    return L * (1 - np.asarray(cos)) / 2


def decode(h: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """Nearest class code: argmin_c d_H(h, o_c) (first class on ties); h in {+-1} or any sign."""
    s = np.where(np.asarray(h) >= 0, 1, -1).astype(np.int64)
    return np.argmax(s @ codes.T.astype(np.int64), axis=1)
