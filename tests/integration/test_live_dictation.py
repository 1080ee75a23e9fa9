"""Live dictation over a real WebSocket: `radservice serve` with its worker, the bundled model."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from tests.hl7_peer import RisClient, order, read_ack
from tests.support import ServeProcess, free_port, radservice, serve, wait_for, write_config
from tests.transcripts import AUDIO_FIXTURES, manifest, spoken_wer

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
CHUNK_S = 0.25


@dataclass
class Service:
    running: ServeProcess
    token: str
    http: httpx.Client

    def ws_url(self, accession: str, **params: str) -> str:
        query = "&".join(f"{k}={v}" for k, v in {"section": "findings", "token": self.token, **params}.items())
        return self.running.base_url.replace("http", "ws") + f"/api/v1/studies/{accession}/dictations/stream?{query}"


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    tmp_path = tmp_path_factory.mktemp("live")
    hl7_port = free_port()
    config = write_config(tmp_path, port=free_port(), hl7_port=hl7_port, workers=1,
                          worker_extra="poll_interval_s = 0.1",
                          extra=f'[whisper]\nvocabulary_dir = "{REPO}/config/vocabulary"\n')
    with serve(config, tmp_path) as running:
        added = radservice("user", "add", "dr.live", "--role", "radiologist", "--config", str(config))
        token = added.stdout.split()[-1]
        with RisClient(hl7_port) as ris:
            for accession, control in (("LIVE-1", "NW"), ("LIVE-2", "NW"), ("LIVE-3", "NW"), ("LIVE-X", "NW"),
                                       ("LIVE-X", "CA")):
                ack = read_ack(ris.send(order(f"{accession}-{control}", accession, control=control,
                                              procedure="CT PULMONARY ANGIOGRAM")))
                assert ack.code == "AA"
        with httpx.Client(base_url=running.base_url, headers={"Authorization": f"Bearer {token}"},
                          timeout=30) as http:
            yield Service(running, token, http)


@dataclass
class Events:
    """Everything the server sent, with the time it arrived."""

    items: list[tuple[float, dict[str, Any]]] = field(default_factory=list)
    close_code: int | None = None

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [e for _, e in self.items if e["type"] == kind]


def listen(ws: ClientConnection, events: Events) -> threading.Thread:
    def run() -> None:
        try:
            for message in ws:
                events.items.append((time.monotonic(), json.loads(message)))
        except ConnectionClosed:
            pass
        events.close_code = ws.close_code
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def send_in_real_time(ws: ClientConnection, data: bytes, seconds: float, speed: float = 1.0) -> None:
    """The file in 250 ms chunks (of audio time), paced like a microphone."""
    chunks = max(1, int(seconds / CHUNK_S))
    size = len(data) // chunks + 1
    for i in range(0, len(data), size):
        ws.send(data[i:i + size])
        time.sleep(CHUNK_S / speed)


def test_webm_stream_gives_partials_then_the_final_transcript(service: Service) -> None:
    item = next(i for i in manifest() if i["id"] == "ct_chest_pe")
    data = (AUDIO_FIXTURES / "ct_chest_pe.webm").read_bytes()
    events = Events()
    with connect(service.ws_url("LIVE-1"), open_timeout=10) as ws:
        started = json.loads(ws.recv(timeout=10))
        assert started["type"] == "started"
        reader = listen(ws, events)
        send_in_real_time(ws, data, 31.3, speed=1.5)
        partials_before_stop = list(events.of("partial"))
        stop_at = time.monotonic()
        ws.send("stop")
        reader.join(60)
    assert len(partials_before_stop) >= 3, events.items
    committed = [p["committed"] for p in partials_before_stop]
    pairs = zip(committed, committed[1:], strict=False)
    assert committed[-1] and all(later.startswith(earlier) for earlier, later in pairs)  # committed never changes
    assert all(p["text"].startswith(p["committed"]) for p in partials_before_stop)
    (final,) = events.of("final")
    assert final["text"] and spoken_wer(item["spoken"], final["text"]) <= 0.5
    final_at = next(t for t, e in events.items if e["type"] == "final")
    print(f"finalization {final_at - stop_at:.2f} s, {len(partials_before_stop)} partials")
    assert events.close_code == 1000
    job = service.http.get(f"/api/v1/jobs/{final['job_id']}").json()
    assert job["status"] == "done" and job["result"]["text"] == final["text"]
    # the live text (tiny.en) is stored at once; the accurate pass (base) over the whole recording
    # then replaces it, in the dictation and in the report nobody has touched
    deadline = time.monotonic() + 120
    while True:
        dictation = service.http.get(f"/api/v1/dictations/{started['dictation_id']}").json()
        if dictation["final_pass"] != "pending" or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert (dictation["status"], dictation["final_pass"], dictation["audio_format"]) == (
        "transcribed", "applied", "webm"), dictation["error"]
    assert dictation["interim_transcript"] == final["text"] and "base" in dictation["transcript_model"]
    assert spoken_wer(item["spoken"], dictation["transcript"]) <= 0.3
    report_id = service.http.get("/api/v1/studies/LIVE-1").json()["report_id"]
    report = service.http.get(f"/api/v1/reports/{report_id}").json()
    # made from the template (1), the live text merged (2), then replaced by the accurate text (3)
    assert report["revision"] == 3 and "pulmonary" in report["sections"]["findings"].lower()


def test_reset_empties_and_the_connection_goes_on(service: Service) -> None:
    data = (AUDIO_FIXTURES / "ct_chest_pe.webm").read_bytes()
    head = data[: len(data) // 3]  # about 10 s
    with connect(service.ws_url("LIVE-2"), open_timeout=10) as ws:
        started = json.loads(ws.recv(timeout=10))
        events = Events()
        reader = listen(ws, events)
        send_in_real_time(ws, head, 10.0, speed=2.0)
        deadline = time.monotonic() + 20
        while not any(p["text"] for p in events.of("partial")) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert any(p["text"] for p in events.of("partial")), "no partial text before reset"
        ws.send("reset")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not (events.of("partial") and events.of("partial")[-1]["text"] == ""):
            time.sleep(0.05)
        assert events.of("partial")[-1] == {"type": "partial", "text": "", "committed": ""}
        ws.send("stop")  # nothing sent since the reset: no speech
        reader.join(60)
    (final,) = events.of("final")
    assert final["text"] == "" and final["error"].startswith("no speech detected")
    dictation = service.http.get(f"/api/v1/dictations/{started['dictation_id']}").json()
    audio = Path(service.running.log_path.parent, "data", "audio", f"{started['dictation_id']}.webm")
    assert dictation["status"] == "failed" and audio.stat().st_size == 0


def test_dropped_connection_leaves_an_interrupted_dictation_to_transcribe_or_resume(service: Service) -> None:
    data = (AUDIO_FIXTURES / "ct_chest_pe.webm").read_bytes()
    with connect(service.ws_url("LIVE-3"), open_timeout=10) as ws:
        dictation_id = json.loads(ws.recv(timeout=10))["dictation_id"]
        send_in_real_time(ws, data[: len(data) // 2], 15.0, speed=4.0)
        ws.socket.close()  # the network goes away: no close frame, no "stop"
    deadline = time.monotonic() + 20
    while service.http.get(f"/api/v1/dictations/{dictation_id}").json()["status"] != "interrupted":
        assert time.monotonic() < deadline, "dictation not marked interrupted"
        time.sleep(0.1)
    # Resumed by a new connection that names it: a new recording (its own header) as the next part.
    more = (AUDIO_FIXTURES / "xr_chest_pneumonia.webm").read_bytes()
    events = Events()
    with connect(service.ws_url("LIVE-3", dictation_id=dictation_id), open_timeout=10) as ws:
        assert json.loads(ws.recv(timeout=10)) == {"type": "started", "dictation_id": dictation_id, "received": 0}
        reader = listen(ws, events)
        send_in_real_time(ws, more[: len(more) // 3], 9.5, speed=4.0)
        ws.send("stop")
        reader.join(60)
    (final,) = events.of("final")
    text = final["text"].lower()
    assert "embolism" in text or "pulmonary" in text, final  # from the first part
    assert "chest" in text or "frontal" in text, final  # from the resumed part
    dictation = service.http.get(f"/api/v1/dictations/{dictation_id}").json()
    assert dictation["status"] == "transcribed"
    # And transcribed again on demand, from the stored parts.
    job_id = service.http.post(f"/api/v1/dictations/{dictation_id}/transcribe").json()["job_id"]
    deadline = time.monotonic() + 60
    while (job := service.http.get(f"/api/v1/jobs/{job_id}").json())["status"] not in ("done", "failed"):
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert job["status"] == "done" and job["result"]["text"]


def framed(offset: int, data: bytes) -> bytes:
    """A binary message with framing=offset: the chunk's 8-byte big-endian offset, then the chunk."""
    return offset.to_bytes(8, "big") + data


def send_framed(ws: ClientConnection, data: bytes, start: int, seconds: float, speed: float = 4.0) -> int:
    """``data`` from byte ``start`` on, in framed chunks paced like a microphone; returns the end offset."""
    chunks = max(1, int(seconds / CHUNK_S))
    size = len(data) // chunks + 1
    for i in range(start, len(data), size):
        ws.send(framed(i, data[i:i + size]))
        time.sleep(CHUNK_S / speed)
    return len(data)


def wait_interrupted(service: Service, dictation_id: str) -> None:
    wait_for(lambda: service.http.get(f"/api/v1/dictations/{dictation_id}").json()["status"] == "interrupted",
             "the dictation marked interrupted", timeout=20)


def closed_with(ws: ClientConnection) -> tuple[int, str]:
    with pytest.raises(ConnectionClosed) as closed:
        while True:
            ws.recv(timeout=10)
    assert closed.value.rcvd is not None
    return closed.value.rcvd.code, closed.value.rcvd.reason


def test_a_recording_cut_by_the_network_goes_on_in_the_same_file_exactly_once(service: Service) -> None:
    """framing=offset: each chunk says where it belongs; a resume continues the same recording
    (headerless WebM bytes appended to the same part) from what the service holds; a gap or a
    repeat is refused with the offset to go on from, and the stored file is the recording, byte
    for byte."""
    data = (AUDIO_FIXTURES / "xr_chest_pneumonia.webm").read_bytes()
    cut = int(len(data) * 0.45)
    with connect(service.ws_url("LIVE-2", framing="offset"), open_timeout=10) as ws:
        started = json.loads(ws.recv(timeout=10))
        assert started["received"] == 0
        dictation_id = started["dictation_id"]
        send_framed(ws, data[:cut], 0, 6.0)
        ws.socket.close()  # the network goes away mid-recording
    wait_interrupted(service, dictation_id)
    resume = service.ws_url("LIVE-2", framing="offset", dictation_id=dictation_id)
    with connect(resume, open_timeout=10) as ws:
        held = json.loads(ws.recv(timeout=10))["received"]
        assert 0 < held <= cut
        ws.send(framed(held + 100, data[held + 100:held + 200]))  # bytes missing in between
        code, reason = closed_with(ws)
    assert code == 4409 and "a gap" in reason and f"go on from {held}" in reason
    wait_interrupted(service, dictation_id)
    with connect(resume, open_timeout=10) as ws:
        assert json.loads(ws.recv(timeout=10))["received"] == held
        ws.send(framed(held - 10, data[held - 10:held + 50]))  # bytes it has already
        code, reason = closed_with(ws)
    assert code == 4409 and "a repeat" in reason
    wait_interrupted(service, dictation_id)
    events = Events()
    with connect(resume, open_timeout=10) as ws:
        assert json.loads(ws.recv(timeout=10))["received"] == held
        reader = listen(ws, events)
        send_framed(ws, data, held, 8.0)
        ws.send("stop")
        reader.join(60)
    (final,) = events.of("final")
    text = final["text"].lower()
    assert "consolidation" in text and "pneumonia" in text, final  # words from before and after the cut
    stored = service.running.log_path.parent / "data" / "audio" / f"{dictation_id}.webm"
    assert stored.read_bytes() == data
    assert sorted(f.name for f in stored.parent.glob(f"{dictation_id}*")) == [stored.name]  # one part
    dictation = service.http.get(f"/api/v1/dictations/{dictation_id}").json()
    assert dictation["status"] == "transcribed"


def test_a_take_scratched_right_after_a_resume_leaves_only_the_new_take(service: Service) -> None:
    """"reset" on a continued recording before its first chunk: the part held the old take, and
    the new take (its own header, from offset 0) replaces it, never appended to it."""
    old = (AUDIO_FIXTURES / "xr_chest_pneumonia.webm").read_bytes()
    new = (AUDIO_FIXTURES / "ct_chest_pe.webm").read_bytes()
    with connect(service.ws_url("LIVE-2", framing="offset"), open_timeout=10) as ws:
        dictation_id = json.loads(ws.recv(timeout=10))["dictation_id"]
        send_framed(ws, old[: len(old) // 3], 0, 3.0)
        ws.socket.close()
    wait_interrupted(service, dictation_id)
    events = Events()
    with connect(service.ws_url("LIVE-2", framing="offset", dictation_id=dictation_id), open_timeout=10) as ws:
        assert json.loads(ws.recv(timeout=10))["received"] > 0
        reader = listen(ws, events)
        ws.send("reset")
        deadline = time.monotonic() + 10
        while not events.of("reset") and time.monotonic() < deadline:
            time.sleep(0.05)
        assert events.of("reset") == [{"type": "reset", "received": 0}]
        send_framed(ws, new, 0, 8.0)
        ws.send("stop")
        reader.join(60)
    (final,) = events.of("final")
    assert "embolism" in final["text"].lower() or "pulmonary" in final["text"].lower(), final
    stored = service.running.log_path.parent / "data" / "audio" / f"{dictation_id}.webm"
    assert stored.read_bytes() == new


@pytest.mark.parametrize(("accession", "params", "code", "words"), [
    ("LIVE-1", {"token": "rs_wrong"}, 4401, "token"),
    ("LIVE-1", {"token": ""}, 4401, "token"),
    ("NOPE", {}, 4404, "no study with accession"),
    ("LIVE-X", {}, 4409, "cancelled"),
    ("LIVE-1", {"section": "history"}, 4422, "unknown section"),
])
def test_refusals_close_with_a_code_and_reason(service: Service, accession: str, params: dict[str, str], code: int,
                                               words: str) -> None:
    with connect(service.ws_url(accession, **params), open_timeout=10) as ws:
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=10)
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == code and words in closed.value.rcvd.reason


def test_malformed_messages_close_but_keep_the_audio(service: Service) -> None:
    with connect(service.ws_url("LIVE-1"), open_timeout=10) as ws:
        dictation_id = json.loads(ws.recv(timeout=10))["dictation_id"]
        ws.send("dance")
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                ws.recv(timeout=10)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1003
    assert service.http.get(f"/api/v1/dictations/{dictation_id}").json()["status"] == "interrupted"
    with connect(service.ws_url("LIVE-1"), open_timeout=10) as ws:
        ws.recv(timeout=10)
        ws.send(b"this is not audio at all")
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                ws.recv(timeout=10)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1003
    assert "unrecognised audio" in closed.value.rcvd.reason
    log = service.running.log()
    assert "Traceback" not in log
    assert service.token not in log and "token=[redacted]" in log  # uvicorn logs WebSocket URLs
