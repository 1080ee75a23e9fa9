"""Work the workers run for dictations: transcription with the study's vocabulary."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from radservice.audit import service as audit
from radservice.config import Settings
from radservice.db.base import utcnow
from radservice.db.session import session_scope
from radservice.dictation import service as dictations
from radservice.dictation.models import Dictation, DictationStatus, FinalPass
from radservice.jobs import service as jobs
from radservice.jobs.worker import JobContext, PermanentJobError
from radservice.pipeline.decode import SAMPLE_RATE, LiveDecoder, decode_parts
from radservice.pipeline.streaming import LocalAgreement, join_words
from radservice.pipeline.transcribe import NoSpeech, Transcriber, Transcript, WhisperTranscriber, WindowDecoder, Word
from radservice.pipeline.vocabulary import TermList, build_prompt
from radservice.reports.service import DRAFT_REPORT

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
            ctx.hold(session)
            dictation = dictation_for_job(session, dictation_id, for_update=True)
            if dictation.status in (DictationStatus.RECORDING.value, DictationStatus.FINALIZING.value):
                # queued while interrupted, run after a resume: the live job owns it now
                return {"dictation_id": dictation_id, "skipped": dictation.status}
            if dictation.audio_path is None:
                raise PermanentJobError("the dictation's audio is no longer stored (retention period)")
            parts = dictations.audio_parts(dictation, self.data_dir)
            fmt = dictation.audio_format
            prompt = study_prompt(self.vocabulary, dictation)
            dictation.status = DictationStatus.TRANSCRIBING.value
        if not all(part.is_file() for part in parts):
            mark_failed(ctx, dictation_id, "audio file missing from the store")
            raise PermanentJobError("the dictation's audio file is missing from the store")
        ctx.report_progress(0.1)
        try:
            # Decoded here, not by the model's loader: a recording in parts (a resumed live dictation)
            # is one audio, raw PCM has no header, and an interrupted stream ends mid-packet.
            audio = decode_parts(parts, fmt)
            transcript = self.transcriber.transcribe(audio, prompt=prompt, hotwords=self.hotwords)
        except NoSpeech:
            mark_failed(ctx, dictation_id, "no speech detected")
            raise PermanentJobError("no speech detected") from None
        except Exception as exc:
            # The job retries; after its last attempt the dictation itself shows the failure too.
            if ctx.job.attempts >= ctx.job.max_attempts:
                mark_failed(ctx, dictation_id, f"transcription failed: {type(exc).__name__}")
            raise
        ctx.report_progress(0.9)
        return store_transcript(ctx, dictation_id, transcript)


    @staticmethod
    def on_failed(session: Session, payload: dict[str, Any], reason: str) -> None:
        """The job failed for good (its last attempt raised, or its worker died): the dictation
        says so, unless a transcript was stored meanwhile."""
        dictation = session.get(Dictation, str(payload.get("dictation_id", "")))
        if dictation is not None and dictation.status not in (DictationStatus.TRANSCRIBED.value,
                                                               DictationStatus.FAILED.value):
            dictation.status = DictationStatus.FAILED.value
            dictation.error = f"transcription failed: {reason}"[:500]


def study_prompt(vocabulary: list[TermList], dictation: Dictation) -> str:
    """The vocabulary prompt of the dictation's study."""
    return build_prompt(vocabulary, modality=dictation.study.modality, procedure=dictation.study.procedure_text)


def keep_transcript(dictation: Dictation, transcript: Transcript) -> None:
    """A transcript's text, words, model and unheard stretches on the dictation (replacing any earlier)."""
    dictation.transcript = transcript.text
    dictation.words = [{"word": w.word.strip(), "start": w.start, "end": w.end, "probability": w.probability}
                       for w in transcript.words]
    dictation.transcript_model = transcript.model
    dictation.unheard = [list(stretch) for stretch in transcript.unheard]
    dictation.transcribed_at = utcnow()


def dictation_for_job(session: Session, dictation_id: str, *, for_update: bool = False) -> Dictation:
    """The dictation a job names (its row locked with ``for_update``); a permanent failure when it
    does not exist (retrying cannot help)."""
    dictation = dictations.get(session=session, dictation_id=dictation_id, for_update=for_update)
    if dictation is None:
        raise PermanentJobError(f"dictation {dictation_id} does not exist")
    return dictation


def mark_failed(ctx: JobContext, dictation_id: str, reason: str) -> None:
    with session_scope(ctx.sessions) as session:
        ctx.hold(session)
        dictation = session.get_one(Dictation, dictation_id)
        dictation.status = DictationStatus.FAILED.value
        dictation.error = reason


def store_transcript(ctx: JobContext, dictation_id: str, transcript: Transcript, *,
                     final_pass: bool = False) -> dict[str, Any]:
    """Keep the transcript on the dictation (replacing any earlier one); the job's result.
    ``final_pass``: the transcript is a live one, and the accurate pass over the whole recording
    is queued with the draft (its text replaces this one in the report when it is done)."""
    final_job_id = None
    with session_scope(ctx.sessions) as session:
        ctx.hold(session)
        dictation = session.get_one(Dictation, dictation_id, with_for_update=True, populate_existing=True)
        # transcribed again after its text went into the report: the new text replaces it there
        # (the draft job's "final" path: replaced while nobody changed the report since, else kept
        # with a note), never appended to it nor skipped
        replacing = dictation.draft_revision is not None and not final_pass
        previous = dictation.transcript
        keep_transcript(dictation, transcript)
        dictation.status = DictationStatus.TRANSCRIBED.value
        dictation.error = ""
        if transcript.duration_s:
            dictation.duration_s = round(transcript.duration_s, 3)
        audit.record(session=session, actor="worker", action="dictation.transcribed", entity_type="dictation",
                     entity_id=dictation_id, detail={"job_id": ctx.job.id, "words": len(transcript.words)})
        # the downstream job, in the same transaction: a stored transcript always reaches the report
        payload: dict[str, Any] = {"dictation_id": dictation_id, **({"final": True} if replacing else {})}
        draft_job_id = jobs.enqueue(session=session, kind=DRAFT_REPORT, payload=payload,
                                    max_attempts=ctx.job.max_attempts).id
        dictation.final_pass = FinalPass.PENDING.value if final_pass or replacing else FinalPass.NONE.value
        # the text replaced (an accurate pass queued for the live text then finds nothing to do)
        dictation.interim_transcript = previous if replacing else ""
        if final_pass:
            final_job_id = jobs.enqueue(session=session, kind=dictations.TRANSCRIBE_FINAL,
                                        payload={"dictation_id": dictation_id},
                                        max_attempts=ctx.job.max_attempts).id
    log.info("dictation %s transcribed: %d words, %.1fs audio", dictation_id, len(transcript.words),
             transcript.duration_s)
    result: dict[str, Any] = {"dictation_id": dictation_id, "text": transcript.text, "model": transcript.model,
                              "duration_s": transcript.duration_s, "draft_job_id": draft_job_id}
    if final_job_id is not None:
        result["final_job_id"] = final_job_id
    return result


class FinalTranscribeFlow(TranscribeFlow):
    """The ``transcribe_final`` job: the accurate model (``whisper.model``) over a finished live
    dictation's whole recording, after the live model's text was stored and drafted. Its
    transcript replaces the live one on the dictation (kept as ``interim_transcript``) and, through
    a ``draft_report`` job with ``final``, in the report while nobody has changed it since.

    A failure leaves the live text where it is: the dictation says so (``final_pass`` failed, the
    reason in ``error``) and stays transcribed.
    """

    def __call__(self, ctx: JobContext) -> dict[str, Any]:
        dictation_id = str(ctx.job.payload.get("dictation_id", ""))
        with session_scope(ctx.sessions) as session:
            ctx.hold(session)
            dictation = dictation_for_job(session, dictation_id)
            # stored already (a retry after the store committed): its draft job is queued
            pending = dictation.final_pass == FinalPass.PENDING.value and not dictation.interim_transcript
            state, purged = dictation.final_pass, dictation.audio_path is None
            if pending and not purged:
                parts = dictations.audio_parts(dictation, self.data_dir)
                fmt = dictation.audio_format
                prompt = study_prompt(self.vocabulary, dictation)
        if not pending:  # a newer transcript, or done already
            return {"dictation_id": dictation_id, "skipped": state}
        if purged:
            return self._failed(ctx, dictation_id, "the audio is no longer stored (retention period)")
        if not all(part.is_file() for part in parts):
            return self._failed(ctx, dictation_id, "the audio file is missing from the store")
        started = time.perf_counter()
        try:
            transcript = self.transcriber.transcribe(decode_parts(parts, fmt), prompt=prompt, hotwords=self.hotwords)
        except NoSpeech:
            return self._failed(ctx, dictation_id, "the accurate pass heard no speech")
        except Exception as exc:
            if ctx.job.attempts >= ctx.job.max_attempts:
                self._failed(ctx, dictation_id, f"the accurate pass failed: {type(exc).__name__}")
            raise
        elapsed = time.perf_counter() - started
        with session_scope(ctx.sessions) as session:
            ctx.hold(session)
            dictation = session.get_one(Dictation, dictation_id, with_for_update=True, populate_existing=True)
            if dictation.final_pass != FinalPass.PENDING.value or dictation.interim_transcript:
                return {"dictation_id": dictation_id, "skipped": dictation.final_pass}
            dictation.interim_transcript = dictation.transcript
            keep_transcript(dictation, transcript)
            audit.record(session=session, actor="worker", action="dictation.transcribed", entity_type="dictation",
                         entity_id=dictation_id, detail={"job_id": ctx.job.id, "words": len(transcript.words),
                                                         "final_pass": True})
            draft_job_id = jobs.enqueue(session=session, kind=DRAFT_REPORT,
                                        payload={"dictation_id": dictation_id, "final": True},
                                        max_attempts=ctx.job.max_attempts).id
        log.info("dictation %s accurate pass: %d words, %.1f s audio in %.1f s", dictation_id, len(transcript.words),
                 transcript.duration_s, elapsed)
        return {"dictation_id": dictation_id, "text": transcript.text, "model": transcript.model,
                "draft_job_id": draft_job_id}

    @staticmethod
    def on_failed(session: Session, payload: dict[str, Any], reason: str) -> None:
        """The accurate pass failed for good: the live text stays, the dictation says why."""
        dictations.fail_final_pass(session=session, dictation_id=str(payload.get("dictation_id", "")),
                                   reason=f"the accurate pass failed: {reason}"[:500])

    @staticmethod
    def _failed(ctx: JobContext, dictation_id: str, reason: str) -> dict[str, Any]:
        with session_scope(ctx.sessions) as session:
            ctx.hold(session)
            dictations.fail_final_pass(session=session, dictation_id=dictation_id, reason=reason)
        log.warning("dictation %s: %s; the live text stays", dictation_id, reason)
        return {"dictation_id": dictation_id, "final_pass": FinalPass.FAILED.value, "reason": reason}


LIVE_STATUSES = (DictationStatus.RECORDING.value, DictationStatus.FINALIZING.value, DictationStatus.INTERRUPTED.value)


class LiveTranscribeFlow:
    """The ``transcribe_live`` job: follows a dictation while it is recorded, publishes partial
    text (local agreement), and on "stop" decodes only the uncommitted tail.

    The API writes the audio and the dictation's status; this job reads the file as it grows and
    polls the status every ``poll_s``: ``recording`` (keep going), ``finalizing`` (the recording is
    complete: final pass), ``interrupted`` (the connection dropped: stop, keep what is committed),
    a new ``stream_epoch`` (reset: start over).
    """

    #: someone is dictating now: a worker takes this job before older ones (an accurate pass, a draft)
    urgent = True

    def __init__(self, *, decoder: WindowDecoder, data_dir: Path, vocabulary: list[TermList],
                 step_s: float = 0.5, poll_s: float = 0.05, wait_for_audio_s: float = 120.0,
                 final_pass: bool = False) -> None:
        self.decoder = decoder
        #: queue the accurate pass (another model than the live one) after the live text
        self.final_pass = final_pass
        self.data_dir = data_dir
        self.vocabulary = vocabulary
        self.step_s = step_s
        self.poll_s = poll_s
        self.wait_for_audio_s = wait_for_audio_s

    @staticmethod
    def on_failed(session: Session, payload: dict[str, Any], reason: str) -> None:
        """The live job failed for good: a dictation still live (or transcribing) is failed with
        the reason, so that `stop` answers and the study shows it (its audio stays, to transcribe
        again)."""
        dictation = session.get(Dictation, str(payload.get("dictation_id", "")))
        if (dictation is not None and dictation.stream_session == int(payload.get("session", 1))
                and dictation.status in (*LIVE_STATUSES, DictationStatus.TRANSCRIBING.value)):
            # (a job of an earlier connection leaves a resumed dictation alone)
            dictation.status = DictationStatus.FAILED.value
            dictation.error = f"live transcription failed: {reason}"[:500]

    def __call__(self, ctx: JobContext) -> dict[str, Any]:
        dictation_id = str(ctx.job.payload.get("dictation_id", ""))
        with ctx.sessions() as session:
            dictation = dictation_for_job(session, dictation_id)
            prompt = study_prompt(self.vocabulary, dictation)
        session_no = int(ctx.job.payload.get("session", 1))
        state = self._wait_for_audio(ctx, dictation_id, session_no)
        while True:
            outcome = self._follow(ctx, dictation_id, prompt, state, session_no)
            if outcome is not None:
                return outcome
            state = self._state(ctx, dictation_id)  # reset: start over on the new epoch

    def _state(self, ctx: JobContext, dictation_id: str) -> dictations.LiveState:
        with (ctx.readers or ctx.sessions)() as session:  # 20 polls a second: no write lock
            state = dictations.live_state(session=session, dictation_id=dictation_id)
        if state is None:
            raise PermanentJobError(f"dictation {dictation_id} does not exist")
        return state

    def _wait_for_audio(self, ctx: JobContext, dictation_id: str, session_no: int) -> dictations.LiveState:
        deadline = time.monotonic() + self.wait_for_audio_s
        while True:
            state = self._state(ctx, dictation_id)
            if (state.audio_path is not None or state.status != DictationStatus.RECORDING.value
                    or state.stream_session != session_no):
                return state
            if dictations.abandoned(state) or time.monotonic() > deadline:
                # the API is gone, or no audio came: the worker is not held; the dictation may be resumed
                self._interrupt(ctx, dictation_id, session_no, force=not dictations.abandoned(state))
                return self._state(ctx, dictation_id)
            time.sleep(self.poll_s)

    @staticmethod
    def _interrupt(ctx: JobContext, dictation_id: str, session_no: int, *, force: bool = False) -> None:
        with ctx.sessions() as session:
            if force:
                dictations.set_live_status(session=session, dictation_id=dictation_id,
                                           status=DictationStatus.INTERRUPTED, stream_session=session_no)
            elif dictations.interrupt_abandoned(session=session, dictation_id=dictation_id,
                                                stream_session=session_no):
                log.warning("live dictation %s: its API has not been seen for %d s; interrupted", dictation_id,
                            dictations.LIVE_STALE.total_seconds())

    def _follow(self, ctx: JobContext, dictation_id: str, prompt: str, state: dictations.LiveState,
                session_no: int) -> dict[str, Any] | None:
        """Follow one epoch of the recording; None when it was reset (start again)."""
        if state.stream_session != session_no or state.status not in LIVE_STATUSES:
            return self._superseded(dictation_id, state, session_no)
        if state.audio_path is None:  # dropped or stopped before any audio
            return self._end_without_audio(ctx, dictation_id, state)
        with ctx.sessions() as session:
            parts = dictations.audio_parts(session.get_one(Dictation, dictation_id), self.data_dir)
        decoder = LiveDecoder(parts, state.audio_format)
        decoder.start()
        agreement = LocalAgreement(self.decoder, prompt=prompt)
        epoch, decoded_at_last_pass, published = state.stream_epoch, 0.0, ("", "")
        try:
            while True:
                state = self._state(ctx, dictation_id)
                if state.stream_session != session_no or state.status not in LIVE_STATUSES:
                    return self._superseded(dictation_id, state, session_no)
                if state.stream_epoch != epoch:
                    return None
                if dictations.abandoned(state):
                    self._interrupt(ctx, dictation_id, session_no)
                    continue  # read again: interrupted now (or the API came back)
                if state.status == DictationStatus.INTERRUPTED.value:
                    return self._interrupted(dictation_id, agreement)
                if state.status == DictationStatus.FINALIZING.value:
                    return self._finalize(ctx, dictation_id, decoder, agreement)
                if decoder.done.is_set() and decoder.error:
                    mark_failed(ctx, dictation_id, "the streamed audio cannot be decoded")
                    raise PermanentJobError(f"the streamed audio cannot be decoded ({decoder.error})")
                if decoder.seconds() - decoded_at_last_pass >= self.step_s:
                    decoded_at_last_pass = decoder.seconds()
                    pass_started = time.perf_counter()
                    agreement.step(decoder.samples())
                    log.debug("live dictation %s: pass over %.1f s window at %.1f s took %.2f s", dictation_id,
                              decoded_at_last_pass - agreement.buffer_start, decoded_at_last_pass,
                              time.perf_counter() - pass_started)
                    now = (agreement.committed_text, agreement.text)
                    if now != published:
                        with ctx.sessions() as session:
                            dictations.publish_partial(session=session, dictation_id=dictation_id, epoch=epoch,
                                                       committed=now[0], text=now[1])
                        published = now
                    ctx.report_progress(0.5)
                else:
                    time.sleep(self.poll_s)
        finally:
            decoder.cancel()

    def _finalize(self, ctx: JobContext, dictation_id: str, decoder: LiveDecoder,
                  agreement: LocalAgreement) -> dict[str, Any]:
        started = time.perf_counter()
        decoder.finish()
        decoder.done.wait()
        decoded = time.perf_counter() - started
        if decoder.error and decoder.seconds() == 0:
            mark_failed(ctx, dictation_id, "the streamed audio cannot be decoded")
            raise PermanentJobError(f"the streamed audio cannot be decoded ({decoder.error})")
        audio = decoder.samples()
        committed_before = len(agreement.committed)
        words: list[Word] = agreement.finish(audio)
        log.info("live dictation %s final: %.1f s tail decoded in %.2f s (decoder %.2f s); %d of %d words "
                 "committed before stop", dictation_id, audio.size / SAMPLE_RATE - agreement.buffer_start,
                 time.perf_counter() - started, decoded, committed_before, len(words))
        text = join_words(words)
        if not text:
            mark_failed(ctx, dictation_id, "no speech detected")
            raise PermanentJobError("no speech detected")
        transcript = Transcript(text=text, words=words, duration_s=audio.size / SAMPLE_RATE,
                                model=self.decoder.name)
        return store_transcript(ctx, dictation_id, transcript, final_pass=self.final_pass)

    @staticmethod
    def _superseded(dictation_id: str, state: dictations.LiveState, session_no: int) -> dict[str, Any]:
        # A newer connection resumed the dictation (its own job follows it from here), or the
        # dictation was finished some other way: this job leaves it alone.
        log.info("live dictation %s: job of connection %d ends (now connection %d, %s)", dictation_id,
                 session_no, state.stream_session, state.status)
        return {"dictation_id": dictation_id, "superseded": True}

    @staticmethod
    def _interrupted(dictation_id: str, agreement: LocalAgreement) -> dict[str, Any]:
        log.info("live dictation %s interrupted; %d words committed", dictation_id, len(agreement.committed))
        return {"dictation_id": dictation_id, "interrupted": True, "text": agreement.committed_text}

    @staticmethod
    def _end_without_audio(ctx: JobContext, dictation_id: str, state: dictations.LiveState) -> dict[str, Any]:
        if state.status == DictationStatus.FINALIZING.value:
            mark_failed(ctx, dictation_id, "no speech detected")
            raise PermanentJobError("no speech detected: the dictation was stopped before any audio arrived")
        return {"dictation_id": dictation_id, "interrupted": True, "text": ""}


def make_transcriber(settings: Settings, model: str | None = None) -> WhisperTranscriber:
    """Load and warm up a model (once per worker process): ``whisper.model`` unless another is named."""
    w = settings.whisper
    name = model or w.model
    transcriber = WhisperTranscriber(model=name, device=w.device, compute_type=w.compute_type,
                                     beam_size=w.beam_size, cpu_threads=w.cpu_threads)
    warm = transcriber.warm_up()
    log.info("whisper %s loaded in %.1fs, warmed up in %.1fs", name, transcriber.load_s, warm)
    return transcriber
