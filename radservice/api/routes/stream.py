"""Live dictation over a WebSocket: audio chunks in, partial and final text out.

The API only relays: chunks are appended to the audio store as they arrive, a worker follows
the growing file and publishes partial text on the dictation row, and this route sends each new
partial to the browser. Close codes: 4401 bad token (also when the token is revoked or expires
while the socket is open), 4403 role or another user's dictation, 4404 unknown accession or
dictation, 4408 no message for RECEIVE_TIMEOUT_S, 4409 cancelled study or a dictation not
resumable, 4422 bad parameter, 1003 an unknown message or unrecognised audio, 1009 a stream over
the configured limits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from radservice.api.deps import SESSION_COOKIE, same_origin
from radservice.audit import service as audit
from radservice.config import Settings
from radservice.dictation import service as dictations
from radservice.dictation.audio import durable
from radservice.dictation.models import Dictation, DictationStatus
from radservice.pipeline.decode import sniff
from radservice.users import service as users
from radservice.users import signin
from radservice.users.models import Role, User
from radservice.worklist import service as worklist

log = logging.getLogger("radservice.stream")
router = APIRouter(prefix="/api/v1", tags=["dictation"])

DICTATORS = {Role.RADIOLOGIST.value, Role.RESIDENT.value}
RELAY_INTERVAL_S = 0.05
FINAL_TIMEOUT_S = 120.0
FINAL_POLL_S = 0.05
#: A socket that sends nothing for this long is closed (4408) and its dictation interrupted: a
#: browser records continuously (MediaRecorder sends a chunk every few hundred ms, silence too).
RECEIVE_TIMEOUT_S = 60.0
#: framing=offset: the big-endian byte offset that starts each binary message
OFFSET_BYTES = 8


class Refused(Exception):
    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason[:120]  # a close reason must fit in 123 bytes


@dataclass
class Live:
    dictation_id: str
    job_id: int
    username: str
    user_id: int
    #: which connection of the dictation this is (a resume starts the next)
    stream_session: int = 1
    token: str = field(default="", repr=False)  # credentials never in a repr (logs, tracebacks)
    #: the page's session cookie, when the caller came with it instead of a token
    cookie: str = field(default="", repr=False)
    #: bytes of the current part already stored (where a continued recording goes on), and of all parts
    received: int = 0
    stored: int = 0
    #: the recording's format when it is continued (its next bytes have no header to sniff)
    audio_format: str | None = None


def _caller(session: Session, settings: Settings, *, token: str, cookie: str) -> tuple[User | None, int | None]:
    """The user of the API token, or else of the page's session cookie; and the page session
    whose idle clock is due to restart (a socket in use is activity), if any."""
    if token:
        return users.authenticate(session=session, token=token), None
    if not cookie:
        return None, None
    found = signin.session_user(session=session, cookie=cookie, policy=signin.Policy.of(settings.auth))
    if found is None:
        return None, None
    user, web = found
    return user, web.id if signin.needs_touch(web) else None


def _open(sessions: sessionmaker[Session], settings: Settings, *, accession: str, issuer: str | None, section: str,
          token: str, cookie: str, dictation_id: str | None, same_part: bool = False,
          expected_user: str | None = None) -> Live:
    """Check the caller and the study, then start (or resume) the dictation and its live job."""
    with sessions() as session:
        user, due = _caller(session, settings, token=token, cookie=cookie)
        if due is not None:
            signin.touch(session=session, session_id=due)
        if user is None:
            raise Refused(4401, "invalid, expired or missing token or session (sign in again, or pass "
                                "?token=TOKEN)")
        if expected_user is not None and expected_user != user.username:
            # the page names who it shows: a cookie that has since become another person's is refused
            raise Refused(4401, "this browser has since been signed in as another user: sign in again")
        if user.role not in DICTATORS:
            raise Refused(4403, f"role '{user.role}' may not dictate")
        try:
            study = worklist.find_study(session=session, accession_number=accession, accession_issuer=issuer)
            parsed = dictations.parse_section(section)
        except worklist.AmbiguousAccession as exc:
            raise Refused(4409, str(exc)) from None
        except dictations.DictationError as exc:
            raise Refused(4422, str(exc)) from None
        if study is None:
            raise Refused(4404, f"no study with accession {accession!r}")
        try:
            if dictation_id:
                # locked: two connections resuming at once get one new part, not the same one twice
                dictation = session.get(Dictation, dictation_id, with_for_update=True, populate_existing=True)
                if dictation is None or dictation.study_id != study.id:
                    raise Refused(4404, f"no dictation {dictation_id!r} for accession {accession!r}")
                job = dictations.resume_live(session=session, dictation=dictation,
                                             max_attempts=settings.worker.max_attempts, user_id=user.id,
                                             user_role=user.role, others_roles=settings.auth.resume_others_roles,
                                             same_part=same_part)
                action = "dictation.stream.resumed"
            else:
                dictation, job = dictations.start_live(session=session, study=study, section=parsed, user_id=user.id,
                                                       dictation_id=str(uuid.uuid4()),
                                                       max_attempts=settings.worker.max_attempts)
                action = "dictation.stream.started"
        except dictations.DictationError as exc:
            raise Refused(4403 if exc.kind == "forbidden" else 4409, str(exc)) from None
        audit.record(session=session, actor=user.username, user_id=user.id, action=action, entity_type="study",
                     entity_id=study.accession_number, detail={"dictation_id": dictation.id, "job_id": job.id})
        parts = dictations.audio_parts(dictation, Path(settings.storage.data_dir))
        continued = same_part and dictation.audio_path is not None
        session.commit()
        # (the files' sizes after the commit: no disk I/O while the dictation's row is locked)
        sizes = [part.stat().st_size if part.is_file() else 0 for part in parts]
        return Live(dictation.id, job.id, user.username, user.id, dictation.stream_session, token,
                    "" if token else cookie, received=sizes[-1] if continued and sizes else 0, stored=sum(sizes),
                    audio_format=dictation.audio_format if continued else None)


class LiveSession:
    """One WebSocket connection of a live dictation."""

    def __init__(self, websocket: WebSocket, live: Live, settings: Settings, sessions: sessionmaker[Session],
                 fmt: str | None, readers: sessionmaker[Session] | None = None, framed: bool = False) -> None:
        self.ws = websocket
        self.live = live
        self.settings = settings
        self.sessions = sessions
        # polls of the dictation's state take no write lock (SQLite): 20 a second per socket
        self.readers = readers or sessions
        self.fmt = fmt or live.audio_format
        #: each binary message starts with its 8-byte offset in the recording (framing=offset)
        self.framed = framed
        self.file: BinaryIO | None = None
        #: bytes of every part stored (the limit and the dictation's audio_bytes), and of the current part
        self.bytes = live.stored
        self.part_bytes = live.received
        self.started = time.monotonic()
        self.max_bytes = settings.storage.max_audio_mb << 20
        self.receive_timeout_s = RECEIVE_TIMEOUT_S
        #: "stop" was accepted: the dictation is finalizing, the watcher no longer beats
        self.stopping = False

    async def run(self) -> None:
        relay = asyncio.create_task(self._relay(), name=f"relay-{self.live.dictation_id}")
        watch = asyncio.create_task(self._watch(), name=f"watch-{self.live.dictation_id}")
        receiving = asyncio.create_task(self._receive(), name=f"receive-{self.live.dictation_id}")
        try:
            done, _ = await asyncio.wait({receiving, watch}, return_when=asyncio.FIRST_COMPLETED)
            if watch in done and not receiving.done():  # the token went bad: the socket ends now
                receiving.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await receiving
                watch.result()
            else:
                receiving.result()
        except Refused as refused:
            relay.cancel()
            await self._set(DictationStatus.INTERRUPTED)
            log.warning("live dictation %s closed: %s", self.live.dictation_id, refused.reason)
            await self._close(refused.code, refused.reason)
        except Exception as exc:  # the transport failed under us: as a dropped connection
            await self._set(DictationStatus.INTERRUPTED)
            log.info("live dictation %s interrupted (%s), %d bytes kept", self.live.dictation_id,
                     type(exc).__name__, self.bytes)
        finally:
            # (cancelled with the server: the dictation's live_seen_at goes stale and a worker
            # interrupts it)
            for task in (relay, watch, receiving):
                task.cancel()
            await asyncio.to_thread(self._close_file)

    async def _watch(self) -> None:
        """Every LIVE_BEAT_S: the caller's token is checked again (revoked, expired or its user
        deactivated: 4401 within seconds), and the dictation's ``live_seen_at`` renewed, which
        tells a worker that this API still holds the socket."""
        while True:
            await asyncio.sleep(dictations.LIVE_BEAT_S)
            if self.stopping:  # finalizing: not recording any more, the final text is awaited
                continue
            outcome = await asyncio.to_thread(self._beat)
            if outcome == "revoked":
                raise Refused(4401, "token revoked or expired: sign in again and resume the dictation")
            if outcome == "ended":
                raise Refused(4409, "the dictation was ended elsewhere (interrupted by a worker, failed, or "
                                    "resumed by another connection)")

    def _beat(self) -> str:
        """``ok``, ``revoked`` (the token), ``ended`` (no longer this connection's recording) or
        ``unknown`` (the database did not answer: the socket goes on; a worker interrupts the
        dictation only when no beat came for dictations.LIVE_STALE)."""
        try:
            with self.readers() as session:
                user, due = _caller(session, self.settings, token=self.live.token, cookie=self.live.cookie)
                if user is None:
                    return "revoked"
            if due is not None:  # a page session's idle clock, renewed at most once a minute
                with self.sessions() as session, session.begin():
                    signin.touch(session=session, session_id=due)
            with self.sessions() as session:
                if not dictations.live_beat(session=session, dictation_id=self.live.dictation_id,
                                            stream_session=self.live.stream_session):
                    return "ended"
        except SQLAlchemyError as exc:
            log.warning("live dictation %s: beat failed (%s); retried", self.live.dictation_id, type(exc).__name__)
            return "unknown"
        return "ok"

    async def _receive(self) -> None:
        while True:
            try:
                message = await asyncio.wait_for(self.ws.receive(), self.receive_timeout_s)
            except TimeoutError:
                raise Refused(4408, f"nothing received for {self.receive_timeout_s:.0f} s: the dictation is "
                                    "interrupted (resume it to go on)") from None
            if message["type"] == "websocket.disconnect":
                await self._set(DictationStatus.INTERRUPTED)
                log.info("live dictation %s interrupted (connection dropped), %d bytes kept",
                         self.live.dictation_id, self.bytes)
                return
            if message.get("bytes") is not None:
                await self._append(message["bytes"])
            elif message.get("text") is not None:
                command = message["text"].strip().lower()
                if command == "reset":
                    await self._reset()
                elif command == "stop":
                    await self._stop()
                    return
                else:
                    raise Refused(1003, f"unknown message {command[:20]!r}: send binary audio, 'reset' or 'stop'")

    async def _append(self, chunk: bytes) -> None:
        if self.framed:
            if len(chunk) < OFFSET_BYTES:
                raise Refused(1003, f"with framing=offset each audio message starts with its {OFFSET_BYTES}-byte "
                                    "offset")
            offset = int.from_bytes(chunk[:OFFSET_BYTES], "big")
            if offset != self.part_bytes:
                what = "a gap" if offset > self.part_bytes else "a repeat"
                raise Refused(4409, f"audio out of order ({what}): the service holds {self.part_bytes} bytes, this "
                                    f"chunk starts at {offset}; resume to go on from {self.part_bytes}")
            chunk = chunk[OFFSET_BYTES:]
        if not chunk:
            return
        if self.file is None:
            self.file = await asyncio.to_thread(self._open_file, chunk)
        self.bytes += len(chunk)
        if self.bytes > self.max_bytes:
            raise Refused(1009, f"stream larger than the limit of {self.settings.storage.max_audio_mb} MiB")
        if time.monotonic() - self.started > self.settings.storage.max_audio_seconds + 30:
            raise Refused(1009, f"dictation longer than the limit of {self.settings.storage.max_audio_seconds} s")
        await asyncio.to_thread(self._write, chunk)
        self.part_bytes += len(chunk)

    def _open_file(self, first: bytes) -> BinaryIO:
        fmt = self.fmt or sniff(first)
        if fmt is None:
            raise Refused(1003, "unrecognised audio: send WebM/Opus, OGG/Opus, WAV, or 16 kHz PCM with ?format=pcm")
        with self.sessions() as session:
            try:
                relative = dictations.set_live_format(session=session, dictation_id=self.live.dictation_id, fmt=fmt)
            except dictations.DictationError as exc:
                raise Refused(4409, str(exc)) from None
        path = Path(self.settings.storage.data_dir) / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        file = path.open("ab")
        if file.tell() != self.part_bytes:
            # an earlier connection's last write landed after `started` said `received`: the
            # client would send those bytes again
            file.close()
            raise Refused(4409, f"the recording grew to {path.stat().st_size} bytes since this connection started: "
                                "resume again")
        return file

    def _write(self, chunk: bytes) -> None:
        assert self.file is not None
        self.file.write(chunk)
        self.file.flush()

    def _close_file(self) -> None:
        if self.file is not None and not self.file.closed:
            durable(self.file)  # on disk before the dictation is finalizing or interrupted
            self.file.close()

    async def _set(self, status: DictationStatus, *, reset: bool = False) -> bool:
        """The dictation's status from this connection; False when it is no longer this
        connection's recording (a worker interrupted or failed it, another connection resumed it)."""
        def write() -> bool:
            with self.sessions() as session:
                return dictations.set_live_status(session=session, dictation_id=self.live.dictation_id,
                                                  status=status, audio_bytes=self.bytes, reset=reset,
                                                  stream_session=self.live.stream_session)
        return await asyncio.to_thread(write)

    async def _reset(self) -> None:
        # the epoch first, and only while this connection still owns the recording: a socket whose
        # dictation was ended (and maybe resumed elsewhere) must not empty the file
        if not await self._set(DictationStatus.RECORDING, reset=True):
            raise Refused(4409, "the dictation was ended elsewhere: resume it to go on")
        if self.file is None and self.part_bytes > 0:
            # a continued recording reset before its first chunk here: the part holds the old take
            self.file = await asyncio.to_thread(self._open_file, b"")
        if self.file is not None:
            await asyncio.to_thread(self._truncate)
        self.bytes -= self.part_bytes
        self.part_bytes = 0
        # said, so a client that scratched a take knows the service dropped it (and need not again)
        await self._send({"type": "reset", "received": 0})
        await self._send({"type": "partial", "text": "", "committed": ""})

    def _truncate(self) -> None:
        assert self.file is not None
        self.file.seek(0)
        self.file.truncate(0)
        self.file.flush()

    async def _stop(self) -> None:
        await asyncio.to_thread(self._close_file)
        if not await self._set(DictationStatus.FINALIZING):
            raise Refused(4409, "the dictation was ended while recording (see its status): transcribe it "
                                "again or resume it")
        self.stopping = True
        deadline = time.monotonic() + FINAL_TIMEOUT_S
        while time.monotonic() < deadline:
            state = await self._state()
            if state is not None and state.status in (DictationStatus.TRANSCRIBED, DictationStatus.FAILED):
                event: dict[str, Any] = {"type": "final", "job_id": self.live.job_id, "text": state.transcript}
                if state.status == DictationStatus.FAILED:
                    event["error"] = state.error
                await self._send(event)
                await self._close(1000, "done")
                return
            await asyncio.sleep(FINAL_POLL_S)
        # No worker finished in time (all busy?): the job still runs; the client polls it.
        await self._send({"type": "final", "job_id": self.live.job_id, "text": None, "pending": True})
        await self._close(1000, "final transcript pending: poll the job")

    async def _state(self) -> dictations.LiveState | None:
        def read() -> dictations.LiveState | None:
            with self.readers() as session:
                return dictations.live_state(session=session, dictation_id=self.live.dictation_id)
        return await asyncio.to_thread(read)

    async def _relay(self) -> None:
        seen = -1
        while True:
            state = await self._state()
            if state is not None and state.partial_seq != seen and state.status == DictationStatus.RECORDING:
                if seen >= 0 or state.partial_text:
                    await self._send({"type": "partial", "text": state.partial_text,
                                      "committed": state.partial_committed})
                seen = state.partial_seq
            await asyncio.sleep(RELAY_INTERVAL_S)

    async def _send(self, event: dict[str, Any]) -> None:
        try:
            await self.ws.send_json(event)
        except (WebSocketDisconnect, RuntimeError):
            pass  # the browser left; its audio is kept and the disconnect is handled by the receiver

    async def _close(self, code: int, reason: str) -> None:
        try:
            await self.ws.close(code=code, reason=reason)
        except RuntimeError:
            pass


@router.websocket("/studies/{accession}/dictations/stream")
async def stream_dictation(websocket: WebSocket, accession: str, section: str = "findings", token: str = "",
                           dictation_id: str | None = None, format: str | None = None,
                           issuer: str | None = None, framing: str | None = None,
                           user: str | None = None) -> None:
    """Live dictation: `started` at once (with `received`: the bytes of the recording the service
    holds), `partial` while speaking, `final` after `stop`. With `framing=offset` every binary
    message starts with its 8-byte big-endian offset in the recording, checked against what is
    stored (a gap or a repeat closes with 4409), and a resume (`dictation_id`) continues the same
    recording from `received` instead of starting a new part. `user`: the username the page
    shows; another user's session is refused (4401)."""
    await websocket.accept()
    settings: Settings = websocket.app.state.settings
    sessions: sessionmaker[Session] = websocket.app.state.sessionmaker
    if format is not None and format not in ("pcm", "webm", "ogg", "wav"):
        await websocket.close(code=4422, reason="format must be pcm, webm, ogg or wav (or left out)")
        return
    if framing not in (None, "offset"):
        await websocket.close(code=4422, reason="framing must be offset (or left out)")
        return
    cookie = "" if token else websocket.cookies.get(SESSION_COOKIE, "")
    if cookie and not same_origin(websocket.headers.get("origin"), websocket.headers.get("host")):
        # a page of another site may open a socket here with the user's cookie (cross-site
        # WebSocket hijacking): the cookie counts only from this service's own page
        await websocket.close(code=4403, reason="refused: the session cookie counts only from this service's page")
        return
    try:
        live = await asyncio.to_thread(_open, sessions, settings, accession=accession, issuer=issuer,
                                       section=section, token=token, cookie=cookie, dictation_id=dictation_id,
                                       same_part=framing == "offset", expected_user=user)
    except Refused as refused:
        await websocket.close(code=refused.code, reason=refused.reason)
        return
    await websocket.send_json({"type": "started", "dictation_id": live.dictation_id, "received": live.received})
    await LiveSession(websocket, live, settings, sessions, format, websocket.app.state.read_sessionmaker,
                      framed=framing == "offset").run()
