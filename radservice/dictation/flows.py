"""Work the workers run for dictations: transcription with the study's vocabulary."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from radservice.audit import service as audit
from radservice.config import Settings
from radservice.db.base import utcnow
from radservice.db.session import session_scope
from radservice.dictation.models import Dictation, DictationStatus
from radservice.dictation.service import TRANSCRIBE
from radservice.jobs.worker import Handler, JobContext, PermanentJobError
from radservice.pipeline.transcribe import NoSpeech, Transcriber, WhisperTranscriber
from radservice.pipeline.vocabulary import TermList, build_prompt, load_vocabulary

log = logging.getLogger("radservice.dictation")


class TranscribeFlow:
    """The ``transcribe`` job: audio -> text with word timings, stored on the dictation (replacing any
    earlier transcript, so a retried job never duplicates)."""

    def __init__(self, *, transcriber: Transcriber, data_dir: Path, vocabulary: list[TermList],
                 hotwords: str = "") -> None:
        self.transcriber = transcriber
        self.data_dir = data_dir
        self.vocabulary = vocabulary
        self.hotwords = hotwords

    def __call__(self, ctx: JobContext) -> dict[str, Any]:
        dictation_id = str(ctx.job.payload.get("dictation_id", ""))
        with session_scope(ctx.sessions) as session:
            dictation = session.get(Dictation, dictation_id)
            if dictation is None:
                raise PermanentJobError(f"dictation {dictation_id} does not exist")
            if dictation.audio_path is None:
                raise PermanentJobError("the dictation's audio is no longer stored (retention period)")
            audio = self.data_dir / dictation.audio_path
            prompt = build_prompt(self.vocabulary, modality=dictation.study.modality,
                                  procedure=dictation.study.procedure_text)
            dictation.status = DictationStatus.TRANSCRIBING.value
        if not audio.is_file():
            self._mark_failed(ctx, dictation_id, "audio file missing from the store")
            raise PermanentJobError("the dictation's audio file is missing from the store")
        ctx.report_progress(0.1)
        try:
            transcript = self.transcriber.transcribe(audio, prompt=prompt, hotwords=self.hotwords)
        except NoSpeech:
            self._mark_failed(ctx, dictation_id, "no speech detected")
            raise PermanentJobError("no speech detected") from None
        except Exception as exc:
            # The job retries; after its last attempt the dictation itself shows the failure too.
            if ctx.job.attempts >= ctx.job.max_attempts:
                self._mark_failed(ctx, dictation_id, f"transcription failed: {type(exc).__name__}")
            raise
        ctx.report_progress(0.9)
        with session_scope(ctx.sessions) as session:
            dictation = session.get_one(Dictation, dictation_id)
            dictation.transcript = transcript.text
            dictation.words = [{"word": w.word, "start": w.start, "end": w.end, "probability": w.probability}
                               for w in transcript.words]
            dictation.transcript_model = transcript.model
            dictation.transcribed_at = utcnow()
            dictation.status = DictationStatus.TRANSCRIBED.value
            dictation.error = ""
            audit.record(session=session, actor="worker", action="dictation.transcribed", entity_type="dictation",
                         entity_id=dictation_id, detail={"job_id": ctx.job.id, "words": len(transcript.words)})
        log.info("dictation %s transcribed: %d words, %.1fs audio", dictation_id, len(transcript.words),
                 transcript.duration_s)
        return {"dictation_id": dictation_id, "text": transcript.text, "model": transcript.model,
                "duration_s": transcript.duration_s}

    @staticmethod
    def _mark_failed(ctx: JobContext, dictation_id: str, reason: str) -> None:
        with session_scope(ctx.sessions) as session:
            dictation = session.get_one(Dictation, dictation_id)
            dictation.status = DictationStatus.FAILED.value
            dictation.error = reason


def make_transcriber(settings: Settings) -> WhisperTranscriber:
    """Load and warm up the configured model (once per worker process)."""
    w = settings.whisper
    transcriber = WhisperTranscriber(model=w.model, device=w.device, compute_type=w.compute_type,
                                     beam_size=w.beam_size, cpu_threads=w.cpu_threads)
    warm = transcriber.warm_up()
    log.info("whisper %s loaded in %.1fs, warmed up in %.1fs", w.model, transcriber.load_s, warm)
    return transcriber


def handlers(settings: Settings) -> Mapping[str, Handler]:
    """The job handlers of a worker process (the default ``radservice worker`` set)."""
    vocabulary = load_vocabulary(settings.whisper.vocabulary_dir)
    if not vocabulary:
        log.warning("no vocabulary in %s: transcription runs without procedure-aware prompts",
                    settings.whisper.vocabulary_dir)
    flow = TranscribeFlow(transcriber=make_transcriber(settings), data_dir=settings.storage.data_dir,
                          vocabulary=vocabulary,
                          hotwords=settings.whisper.hotwords)
    return {TRANSCRIBE: flow}
