"""The job handlers of a normal worker process: where the domain's flows meet their adapters
(the worker's composition root, as cli.py and serve.py are the service's)."""

from __future__ import annotations

import logging
from collections.abc import Mapping

from integrations.ollama.client import make_model
from radservice.config import Settings
from radservice.dictation.flows import FinalTranscribeFlow, LiveTranscribeFlow, TranscribeFlow, make_transcriber
from radservice.dictation.service import TRANSCRIBE, TRANSCRIBE_FINAL, TRANSCRIBE_LIVE
from radservice.jobs.worker import Handler, OnFailed
from radservice.pipeline.vocabulary import load_vocabulary
from radservice.reports.flows import DraftFlow
from radservice.reports.service import DRAFT_REPORT

log = logging.getLogger("radservice.worker")


def handlers(settings: Settings) -> Mapping[str, Handler]:
    """Transcription (uploaded and live) and report drafting; the model loads here, once."""
    vocabulary = load_vocabulary(settings.whisper.vocabulary_dir)
    if not vocabulary:
        log.warning("no vocabulary in %s: transcription runs without procedure-aware prompts",
                    settings.whisper.vocabulary_dir)
    transcriber = make_transcriber(settings)
    flow = TranscribeFlow(transcriber=transcriber, data_dir=settings.storage.data_dir,
                          vocabulary=vocabulary, hotwords=settings.whisper.hotwords)
    # uploads may use a slower, more accurate model; live passes need one that keeps up with speech
    decoder = transcriber if settings.whisper.live_model == settings.whisper.model \
        else make_transcriber(settings, settings.whisper.live_model)
    # with two models, the live text is replaced by the accurate model's when the recording is done
    live = LiveTranscribeFlow(decoder=decoder, data_dir=settings.storage.data_dir, vocabulary=vocabulary,
                              final_pass=decoder is not transcriber)
    final = FinalTranscribeFlow(transcriber=transcriber, data_dir=settings.storage.data_dir,
                                vocabulary=vocabulary, hotwords=settings.whisper.hotwords)
    model = make_model(settings.llm)
    log.info("report refinement: %s", f"rules, then {model.name} behind the guard" if model else "rules only "
             "(llm.enabled = false)")
    return {TRANSCRIBE: flow, TRANSCRIBE_LIVE: live, TRANSCRIBE_FINAL: final,
            DRAFT_REPORT: DraftFlow.from_settings(settings, model)}


def failure_markers() -> Mapping[str, OnFailed]:
    """What marks a job's subject failed when the job fails for good, by kind, without loading a
    model (for the reaper outside a worker)."""
    return {TRANSCRIBE: TranscribeFlow.on_failed, TRANSCRIBE_LIVE: LiveTranscribeFlow.on_failed,
            TRANSCRIBE_FINAL: FinalTranscribeFlow.on_failed, DRAFT_REPORT: DraftFlow.on_failed}
