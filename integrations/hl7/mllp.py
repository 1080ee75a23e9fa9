"""MLLP framing: bytes in, frames out. Knows the start and end marks and nothing of HL7.

A frame is ``<VT> payload <FS><CR>`` (HL7 v2 MLLP, release 2). The reader keeps every
byte after an end mark for the next frame, skips (and counts) bytes outside a frame, and
refuses a frame larger than its limit, so one misbehaving peer costs only its connection.
"""

from __future__ import annotations

START_BLOCK = b"\x0b"
END_BLOCK = b"\x1c\x0d"


class FrameTooLarge(Exception):
    """A frame grew past the reader's limit before its end mark arrived.

    ``complete`` holds the frames that ended before it in the same data: they are whole messages
    and must still be answered.
    """

    def __init__(self, message: str, complete: list[bytes]) -> None:
        super().__init__(message)
        self.complete = complete


def wrap(payload: bytes) -> bytes:
    """One MLLP frame around a message's bytes."""
    return START_BLOCK + payload + END_BLOCK


class FrameReader:
    """Incremental MLLP deframer: ``feed()`` bytes as they arrive, iterate complete frames.

    Parameters
    ----------
    max_frame_bytes
        Largest payload accepted; a longer one raises FrameTooLarge from ``feed``.
    """

    def __init__(self, max_frame_bytes: int) -> None:
        self.max_frame_bytes = max_frame_bytes
        self._buffer = bytearray()
        self._in_frame = False
        self._scanned = 0  # bytes of the open frame already searched for marks
        #: Bytes seen outside any frame (junk, or a frame abandoned by a new start mark).
        self.discarded = 0
        #: The same, since the last complete frame: what a peer that never frames looks like.
        self.junk_run = 0

    @property
    def pending(self) -> int:
        """Bytes held for a frame that has not ended yet."""
        return len(self._buffer)

    @property
    def in_frame(self) -> bool:
        """True between a start mark and its end mark."""
        return self._in_frame

    def feed(self, data: bytes) -> list[bytes]:
        """Add received bytes; return the payloads of every frame they complete.

        A start mark inside an open frame abandons the partial frame (a sender that gave up
        on a message and started again) and starts a new one.

        Raises
        ------
        FrameTooLarge
            The frame being read is longer than ``max_frame_bytes``.
        """
        buf = self._buffer
        buf += data
        frames: list[bytes] = []
        while True:
            if not self._in_frame:
                start = buf.find(START_BLOCK)
                if start < 0:
                    self.discarded += len(buf)
                    self.junk_run += len(buf)
                    buf.clear()
                    return frames
                self.discarded += start
                self.junk_run += start
                del buf[: start + 1]
                self._in_frame = True
                self._scanned = 0
            # Search one byte back, since an end mark may straddle two reads.
            frm = max(self._scanned - 1, 0)
            end = buf.find(END_BLOCK, frm)
            restart = buf.find(START_BLOCK, frm, end if end >= 0 else len(buf))
            if restart >= 0:
                self.discarded += restart
                self.junk_run += restart
                del buf[: restart + 1]
                self._scanned = 0
                continue
            if end < 0:
                self._scanned = len(buf)
                if len(buf) > self.max_frame_bytes:
                    raise FrameTooLarge(f"frame exceeds {self.max_frame_bytes} bytes", frames)
                return frames
            payload = bytes(buf[:end])
            del buf[: end + len(END_BLOCK)]
            self._in_frame = False
            if len(payload) > self.max_frame_bytes:
                raise FrameTooLarge(f"frame exceeds {self.max_frame_bytes} bytes", frames)
            frames.append(payload)
            self.junk_run = 0
