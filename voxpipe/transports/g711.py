"""G.711 mu-law and A-law to and from 16-bit linear PCM, with numpy tables (no ``audioop``).

The tables follow ITU-T G.711 as the classic Sun reference code computes it, the same values
Asterisk's own ulaw/alaw translators produce. Encoding looks every sample up in a table of all
65536 PCM values; decoding in a table of the 256 codes. The tables are built on first use.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt

_SEG_ULAW_END = np.array([0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF], dtype=np.int32)
_SEG_ALAW_END = np.array([0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF], dtype=np.int32)
_ULAW_BIAS = 0x84
_ULAW_CLIP = 8159

_tables: dict[str, npt.NDArray[Any]] = {}


def _all_pcm() -> npt.NDArray[np.int32]:
    """Every 16-bit sample, indexed by its unsigned bit pattern (so ``table[pcm.view(u16)]``)."""
    return np.arange(65536, dtype=np.uint16).view(np.int16).astype(np.int32)


def _ulaw_encode_table() -> npt.NDArray[np.uint8]:
    pcm = _all_pcm() >> 2
    negative = pcm < 0
    mask = np.where(negative, 0x7F, 0xFF)
    value = np.minimum(np.where(negative, -pcm, pcm), _ULAW_CLIP) + (_ULAW_BIAS >> 2)
    seg = np.searchsorted(_SEG_ULAW_END, value, side="left")
    code = (np.minimum(seg, 7) << 4) | ((value >> (np.minimum(seg, 7) + 1)) & 0x0F)
    code = np.where(seg >= 8, 0x7F, code)
    return ((code ^ mask) & 0xFF).astype(np.uint8)


def _ulaw_decode_table() -> npt.NDArray[np.int16]:
    code = ~np.arange(256, dtype=np.int32) & 0xFF
    t = (((code & 0x0F) << 3) + _ULAW_BIAS) << ((code & 0x70) >> 4)
    return np.where(code & 0x80, _ULAW_BIAS - t, t - _ULAW_BIAS).astype(np.int16)


def _alaw_encode_table() -> npt.NDArray[np.uint8]:
    pcm = _all_pcm() >> 3
    negative = pcm < 0
    mask = np.where(negative, 0x55, 0xD5)
    value = np.where(negative, -pcm - 1, pcm)
    seg = np.searchsorted(_SEG_ALAW_END, value, side="left")
    low = np.where(seg < 2, (value >> 1) & 0x0F, (value >> np.clip(seg, 0, 7)) & 0x0F)
    code = np.where(seg >= 8, 0x7F, (np.minimum(seg, 7) << 4) | low)
    return ((code ^ mask) & 0xFF).astype(np.uint8)


def _alaw_decode_table() -> npt.NDArray[np.int16]:
    code = np.arange(256, dtype=np.int32) ^ 0x55
    t = (code & 0x0F) << 4
    seg = (code & 0x70) >> 4
    t = np.where(seg == 0, t + 8, t + 0x108)
    t = np.where(seg > 1, t << np.maximum(seg - 1, 0), t)
    return np.where(code & 0x80, t, -t).astype(np.int16)


_BUILDERS: dict[str, Callable[[], npt.NDArray[Any]]] = {
    "ulaw.enc": _ulaw_encode_table,
    "ulaw.dec": _ulaw_decode_table,
    "alaw.enc": _alaw_encode_table,
    "alaw.dec": _alaw_decode_table,
}


def _table(name: str) -> npt.NDArray[Any]:
    found = _tables.get(name)
    if found is None:
        found = _tables[name] = _BUILDERS[name]()
    return found


def encode(pcm: bytes, law: str) -> bytes:
    """Little-endian PCM16 to G.711 ``law`` ("ulaw" or "alaw"): one byte per sample."""
    samples = np.frombuffer(pcm, dtype="<i2").view(np.uint16)
    return _table(f"{law}.enc")[samples].tobytes()


def decode(data: bytes, law: str) -> bytes:
    """G.711 ``law`` ("ulaw" or "alaw") to little-endian PCM16."""
    codes = np.frombuffer(data, dtype=np.uint8)
    return _table(f"{law}.dec")[codes].astype("<i2").tobytes()
