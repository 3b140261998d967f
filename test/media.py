"""Small, valid media files made with the standard library: WAV audio and PNG images, deterministic bytes."""

from __future__ import annotations

import io
import math
import struct
import wave
import zlib

__all__ = ["WAV_RATE", "png_bytes", "wav_bytes"]

#: Samples per second of the test audio: telephone quality keeps the files small.
WAV_RATE = 8000


def wav_bytes(seconds: float = 0.25, frequency: float = 440.0, rate: int = WAV_RATE,
              pcm: bytes | None = None) -> bytes:
    """A mono 16-bit PCM WAV file holding a sine tone of ``frequency`` Hz, or the samples ``pcm`` given."""
    if pcm is None:
        frames = int(seconds * rate)
        samples = (int(12000 * math.sin(2 * math.pi * frequency * i / rate)) for i in range(frames))
        pcm = struct.pack(f"<{frames}h", *samples)
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm)
    return buf.getvalue()


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    # PNG specification, section 5.3: length, type, data, then the CRC of type and data.
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_bytes(width: int = 8, height: int = 8, rgba: tuple[int, int, int, int] = (200, 40, 90, 255)) -> bytes:
    """An RGBA PNG of ``width`` x ``height``: a diagonal gradient over ``rgba``, so rows differ."""
    rows = []
    for y in range(height):
        row = bytearray([0])  # filter type 0 (None) for each scanline
        for x in range(width):
            shade = (x + y) * 255 // max(1, width + height - 2)
            row += bytes([rgba[0], shade, rgba[2], rgba[3]])
        rows.append(bytes(row))
    header = struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0)  # 8-bit depth, colour type 6 (RGBA)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header)
            + _png_chunk(b"IDAT", zlib.compress(b"".join(rows))) + _png_chunk(b"IEND", b""))
