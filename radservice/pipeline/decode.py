"""Audio to 16 kHz mono float32, for whole files and for files still being written (live dictation).

A live dictation's file grows while the radiologist speaks. `GrowingFile` hands FFmpeg (through
PyAV) the bytes as they arrive and blocks, instead of reporting the end, until the writer says
the recording is over; so each chunk is demuxed and decoded once, never re-read.
"""

from __future__ import annotations

import io
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import av
import numpy as np

SAMPLE_RATE = 16_000
#: Our stored extension -> FFmpeg demuxer name ("pcm" is raw 16-bit little-endian 16 kHz mono).
DEMUXERS = {"webm": "matroska", "ogg": "ogg", "wav": "wav", "mp3": "mp3", "m4a": "mov", "flac": "flac"}

Samples = np.ndarray[Any, np.dtype[np.float32]]


def sniff(head: bytes) -> str | None:
    """The container of a stream from its first bytes (what MediaRecorder or a WAV writer sends)."""
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return "webm"
    if head.startswith(b"OggS"):
        return "ogg"
    if head.startswith(b"RIFF") and head[8:12] == b"WAVE":
        return "wav"
    return None


class GrowingFile(io.RawIOBase):
    """Reads a file that another process is still appending to.

    ``finished()`` says the writer is done: then the end of the file is the end. ``cancelled()``
    ends a blocked read as if the file ended there.
    """

    def __init__(self, path: Path, finished: Callable[[], bool], cancelled: Callable[[], bool] = lambda: False,
                 poll_s: float = 0.02) -> None:
        super().__init__()
        self._fh = path.open("rb")
        self._finished = finished
        self._cancelled = cancelled
        self._poll_s = poll_s

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        while True:
            if self._cancelled():
                return 0  # an end of file: FFmpeg stops cleanly (an exception here it would only print)
            # Ask "finished?" before reading: bytes written before the flag was set are then seen.
            finished = self._finished()
            n = self._fh.readinto(view)
            if n:
                return n
            if finished:
                return 0
            time.sleep(self._poll_s)

    def close(self) -> None:
        self._fh.close()
        super().close()


def _pcm_chunks(reader: io.RawIOBase) -> Any:
    carry = b""
    while True:
        data = reader.read(32_768)
        if not data:
            return
        data = carry + data
        usable = len(data) - len(data) % 2
        carry = data[usable:]
        if usable:
            yield np.frombuffer(data[:usable], dtype="<i2").astype(np.float32) / 32768.0


def decode_stream(reader: io.RawIOBase | Path, fmt: str, sink: Callable[[Samples], None]) -> None:
    """Decode ``reader`` (a growing file, or a whole one by path: MP4 needs to seek) to 16 kHz mono
    float32 and hand each piece to ``sink`` as it is decoded.

    A file cut off mid-packet (a dropped connection) ends where its last whole frame ends.

    Raises
    ------
    av.FFmpegError
        The data is not audio of that format at all (nothing decodable before the error).
    """
    if fmt == "pcm":
        if isinstance(reader, Path):
            with reader.open("rb") as raw:
                for piece in _pcm_chunks(raw):  # type: ignore[arg-type]
                    sink(piece)
            return
        for piece in _pcm_chunks(reader):
            sink(piece)
        return
    decoded = 0
    # A growing file is read as it comes (no probing ahead); a whole file is opened normally.
    source: Any = str(reader) if isinstance(reader, Path) else reader
    options = {} if isinstance(reader, Path) else {"analyzeduration": "0", "probesize": "32"}
    try:
        with av.open(source, mode="r", format=DEMUXERS.get(fmt), options=options) as container:
            resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
            for frame in container.decode(audio=0):
                for out in resampler.resample(frame):
                    piece = out.to_ndarray().reshape(-1).astype(np.float32, copy=False)
                    decoded += piece.size
                    sink(piece)
    except (av.FFmpegError, EOFError):
        if decoded == 0:
            raise
        # What was decoded stands: the tail of an interrupted recording is cut mid-packet.


def decode_parts(paths: Sequence[Path], fmt: str) -> Samples:
    """Every part of a recording, decoded and joined (whole files, nothing growing). An empty part
    (a take scratched before any audio came, then stopped) adds nothing."""
    return decode_stretch(paths, fmt, 0, sys.maxsize)[0]


class _Enough(Exception):
    """The stretch wanted is decoded: decoding stops."""


def decode_stretch(paths: Sequence[Path], fmt: str, first: int, last: int) -> tuple[Samples, int]:
    """Samples ``first`` to ``last`` (16 kHz) of the recording as ``decode_parts`` joins it, decoding
    no further than ``last`` and keeping only the stretch; and how far decoding got (the
    recording's length in samples when it ends before ``last``)."""
    kept: list[Samples] = []
    at = 0

    def sink(piece: Samples) -> None:
        nonlocal at
        low, at = at, at + piece.size
        if at > first and low < last:
            kept.append(piece[max(0, first - low):min(piece.size, last - low)])
        if at >= last:
            raise _Enough

    try:
        for path in paths:
            if path.stat().st_size:
                decode_stream(path, fmt, sink)
    except _Enough:
        pass
    return (np.concatenate(kept) if kept else np.zeros(0, dtype=np.float32)), at


class LiveDecoder(threading.Thread):
    """Decodes the parts of a live dictation in the background as their bytes arrive.

    Earlier parts are complete; the last grows until ``finish()``. ``samples()`` is what has
    been decoded so far; ``done`` is set at the end (``error`` says if it ended badly).
    """

    def __init__(self, paths: Sequence[Path], fmt: str) -> None:
        super().__init__(name="live-decoder", daemon=True)
        self.paths = list(paths)
        self.fmt = fmt
        self._finished = threading.Event()
        self._cancelled = threading.Event()
        self._lock = threading.Lock()
        self._pieces: list[Samples] = []
        self._count = 0
        self.done = threading.Event()
        self.error: str | None = None

    def finish(self) -> None:
        """The writer is done: decode to the end of the file, then stop."""
        self._finished.set()

    def cancel(self) -> None:
        self._cancelled.set()

    def _sink(self, piece: Samples) -> None:
        with self._lock:
            self._pieces.append(piece)
            self._count += piece.size

    def seconds(self) -> float:
        return self._count / SAMPLE_RATE

    def samples(self) -> Samples:
        with self._lock:
            if len(self._pieces) > 1:
                self._pieces = [np.concatenate(self._pieces)]
            return self._pieces[0] if self._pieces else np.zeros(0, dtype=np.float32)

    def run(self) -> None:
        try:
            for path in self.paths[:-1]:
                decode_stream(path, self.fmt, self._sink)
            last = self.paths[-1]
            # Wait for the first bytes (a reset empties the file): no audio at all is no error.
            while not (last.exists() and last.stat().st_size > 0):
                if self._cancelled.is_set() or self._finished.is_set():
                    return
                time.sleep(0.02)
            with GrowingFile(last, finished=self._finished.is_set, cancelled=self._cancelled.is_set) as reader:
                decode_stream(reader, self.fmt, self._sink)
        except Exception as exc:  # becomes the job's failure through `error`, never a dead worker
            self.error = f"{type(exc).__name__}: {exc}"
        finally:
            self.done.set()
