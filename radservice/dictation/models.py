"""Dictations: one recording against one study section, its stored audio and its transcript."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, CheckConstraint, Float, ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from radservice.db.base import Base, UtcDateTime, one_of, utcnow
from radservice.worklist.models import Study


class Section(StrEnum):
    FINDINGS = "findings"
    IMPRESSION = "impression"


class DictationStatus(StrEnum):
    RECEIVED = "received"
    # Live dictation: audio arriving over a WebSocket; then the final pass after "stop".
    RECORDING = "recording"
    FINALIZING = "finalizing"
    # The connection dropped before "stop": the audio is kept, to transcribe or resume.
    INTERRUPTED = "interrupted"
    TRANSCRIBING = "transcribing"
    TRANSCRIBED = "transcribed"
    FAILED = "failed"


class FinalPass(StrEnum):
    """The accurate pass after a live dictation (uploads on ``whisper.model``, live text on
    ``whisper.live_model``): none (not needed), pending, applied (its text replaced the live
    text in the draft), kept (the draft changed first: the live text stays, the accurate
    transcript is on the dictation), failed (the live text stays; the reason is in ``error``)."""

    NONE = "none"
    PENDING = "pending"
    APPLIED = "applied"
    KEPT = "kept"
    FAILED = "failed"


class Dictation(Base):
    __tablename__ = "dictations"
    __table_args__ = (
        CheckConstraint("section IN ('findings', 'impression')", name="section"),
        one_of("status", DictationStatus),
        one_of("final_pass", FinalPass),
    )

    # A server-made UUID; the audio file is named after it, never after anything a client sent.
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id"), index=True)
    section: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16), default=DictationStatus.RECEIVED.value)
    # Relative to storage.data_dir; NULL once the retention purge removed the audio.
    audio_path: Mapped[str | None] = mapped_column(String(255), nullable=True)
    audio_format: Mapped[str] = mapped_column(String(32))
    audio_bytes: Mapped[int] = mapped_column(Integer)
    duration_s: Mapped[float] = mapped_column(Float)
    created_by: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    # The latest transcription; a retried job replaces it.
    transcript: Mapped[str] = mapped_column(Text, default="")
    # [{"word", "start", "end", "probability"}, ...] for flagging low-confidence words later.
    words: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON, nullable=True)
    transcript_model: Mapped[str] = mapped_column(String(128), default="")
    # [[start, end], ...] seconds of detected speech no written word covers (flagged on the report).
    unheard: Mapped[list[list[float]] | None] = mapped_column(JSON, nullable=True)
    transcribed_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    error: Mapped[str] = mapped_column(Text, default="")
    job_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    # Live dictation: the parts recorded by successive connections (1 = audio_path alone; part
    # k > 1 is stored beside it as {uuid}.{k}.{ext}), the reset counter, and the latest partial
    # text the streaming worker published (committed = what two passes agreed on).
    audio_parts: Mapped[int] = mapped_column(Integer, default=1)
    # Which connection is recording (a resume starts the next one; its job supersedes the last).
    stream_session: Mapped[int] = mapped_column(Integer, default=0)
    stream_epoch: Mapped[int] = mapped_column(Integer, default=0)
    partial_seq: Mapped[int] = mapped_column(Integer, default=0)
    partial_committed: Mapped[str] = mapped_column(Text, default="")
    partial_text: Mapped[str] = mapped_column(Text, default="")
    # The accurate pass after a live dictation: its state, and the live transcript it replaced.
    final_pass: Mapped[str] = mapped_column(String(16), default=FinalPass.NONE.value)
    interim_transcript: Mapped[str] = mapped_column(Text, default="")
    # The report's revision right after this dictation was merged into it, and the report's
    # sections just before: a later, more accurate transcript replaces the merged text only while
    # the revision is unchanged (nobody edited, no other dictation came in between).
    draft_revision: Mapped[int | None] = mapped_column(Integer, nullable=True)
    draft_before: Mapped[dict[str, str] | None] = mapped_column(JSON, nullable=True)
    # Live dictation: when the API last saw its socket open (a worker ends the live job of a
    # dictation whose API is gone), and the user who spoke each part (part k at index k-1).
    live_seen_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    part_speakers: Mapped[list[int | None] | None] = mapped_column(JSON, nullable=True)

    study: Mapped[Study] = relationship()
