"""Live dictation figures: fixture dictations streamed over the WebSocket to `radservice serve`.

    .venv/bin/python bench/stream.py [--speeds 1,2] [--fixtures ct_chest_pe,...] [--no-long]

Each fixture is uploaded whole once (the reference transcript), then streamed in 250 ms chunks
at each speed (1 = real time). A 60 s dictation (two fixtures joined, sent as 16 kHz PCM) runs
at real time too. Printed per stream and in total: finalization latency (from sending "stop"
to receiving "final"), partial delay behind speech (for each committed word: when it was first
committed, minus when its audio was sent; median and p95), word error rate of the streamed
final and of the uploaded transcript against the spoken reference, and the worker process's
CPU share while streaming. Targets (tiny.en, 2 cores): finalization <= 1.0 s for a 60 s
dictation; partial delay median <= 2 s; streamed WER <= 1.1 x uploaded WER.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import httpx  # noqa: E402
import numpy as np  # noqa: E402
from websockets.sync.client import connect  # noqa: E402

from radservice.pipeline.decode import SAMPLE_RATE, decode_parts  # noqa: E402
from tests.hl7_peer import RisClient, order, read_ack  # noqa: E402
from tests.support import child_pids, free_port, serve, write_config  # noqa: E402
from tests.transcripts import AUDIO_FIXTURES, manifest, normalise, spoken_wer  # noqa: E402

CHUNK_S = 0.25
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def rss(pid: int) -> int:
    return int(Path(f"/proc/{pid}/statm").read_text().split()[1])


class Service:
    def __init__(self, workdir: Path) -> None:
        self.hl7_port, port = free_port(), free_port()
        self.config = write_config(workdir, port=port, hl7_port=self.hl7_port, workers=1,
                                   worker_extra="poll_interval_s = 0.1",
                                   extra=f'[whisper]\nvocabulary_dir = "{REPO}/config/vocabulary"\n')
        self.running = contextlib.ExitStack()
        self.serve = self.running.enter_context(serve(self.config, workdir))
        self.base = self.serve.base_url
        added = subprocess.run([sys.executable, "-m", "radservice.cli", "user", "add", "bench", "--role",
                                "radiologist", "--config", str(self.config)], capture_output=True, text=True,
                               check=True)
        self.token = added.stdout.split()[-1]
        self.http = httpx.Client(base_url=self.base, headers={"Authorization": f"Bearer {self.token}"}, timeout=60)
        time.sleep(3)  # the worker loads and warms its model
        # the worker is the child holding the model (the other is multiprocessing's resource tracker)
        self.worker_pid = max(child_pids(self.serve.proc.pid), key=rss)

    def order(self, accession: str, modality: str, procedure: str) -> None:
        with RisClient(self.hl7_port) as ris:
            assert read_ack(ris.send(order(accession, accession, modality=modality,
                                           procedure=procedure.upper()))).code == "AA"

    def upload(self, accession: str, name: str, data: bytes) -> str:
        response = self.http.post(f"/api/v1/studies/{accession}/dictations", files={"audio": (name, data)})
        job_id = response.json()["job_id"]
        while (job := self.http.get(f"/api/v1/jobs/{job_id}").json())["status"] not in ("done", "failed"):
            time.sleep(0.1)
        return str(job["result"]["text"])

    def stop(self) -> None:
        self.serve.stop(30)
        self.running.close()


def stream(service: Service, accession: str, data: bytes, seconds: float, speed: float,
           fmt: str | None = None) -> dict[str, Any]:
    query = f"section=findings&token={service.token}" + (f"&format={fmt}" if fmt else "")
    url = service.base.replace("http", "ws") + f"/api/v1/studies/{accession}/dictations/stream?{query}"
    events: list[tuple[float, dict[str, Any]]] = []
    with connect(url, open_timeout=10, max_size=None) as ws:
        dictation_id = json.loads(ws.recv(timeout=10))["dictation_id"]

        def read() -> None:
            try:
                for message in ws:
                    events.append((time.monotonic(), json.loads(message)))
            except Exception:  # the connection closing ends the reading
                pass
        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        cpu0, t0 = cpu_seconds(service.worker_pid), time.monotonic()
        chunks = max(1, round(seconds / CHUNK_S))
        size = -(-len(data) // chunks)
        for i in range(chunks):
            ws.send(data[i * size:(i + 1) * size])
            # pace by the clock, not by sleeps that add up
            time.sleep(max(0.0, t0 + (i + 1) * CHUNK_S / speed - time.monotonic()))
        stop_at = time.monotonic()
        ws.send("stop")
        reader.join(120)
    cpu = (cpu_seconds(service.worker_pid) - cpu0) / (stop_at - t0)
    final_at, final = next((t, e) for t, e in events if e["type"] == "final")
    words = service.http.get(f"/api/v1/dictations/{dictation_id}").json()["words"] or []
    # Where each final word ends in the committed text, to find when it was first committed.
    ends, text = [], ""
    for w in words:
        text = (text + " " + w["word"]).strip() if not w["word"].startswith((".", ",")) else text + w["word"]
        ends.append(len(normalise(text).split()))
    delays = []
    partials = [(t, len(normalise(e["committed"]).split())) for t, e in events if e["type"] == "partial"]
    for w, n_words in zip(words, ends, strict=True):
        first = next((t for t, count in partials if count >= n_words), None)
        if first is not None:
            delays.append(first - (t0 + w["end"] / speed))
    return {"final_s": final_at - stop_at, "text": final["text"] or "", "delays": delays, "cpu": cpu}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--speeds", default="1,2")
    parser.add_argument("--fixtures", default="", help="comma-separated fixture ids (default: every webm/ogg/wav one)")
    parser.add_argument("--no-long", action="store_true", help="skip the 60 s PCM dictation")
    args = parser.parse_args()
    speeds = [float(s) for s in args.speeds.split(",")]
    items = [i for i in manifest() if i["format"] in ("webm", "ogg", "wav")]
    if args.fixtures:
        items = [i for i in items if i["id"] in args.fixtures.split(",")]
    workdir = Path(tempfile.mkdtemp(prefix="rs-stream-"))
    service = Service(workdir)
    rows: list[tuple[str, float, float, float, dict[str, Any]]] = []
    try:
        for n, item in enumerate(items):
            path = AUDIO_FIXTURES / f"{item['id']}.{item['format']}"
            seconds = decode_parts([path], item["format"]).size / SAMPLE_RATE
            service.order(f"B-{n}", item["modality"], item["procedure"])
            uploaded = spoken_wer(item["spoken"], service.upload(f"B-{n}", path.name, path.read_bytes()))
            for speed in speeds:
                result = stream(service, f"B-{n}", path.read_bytes(), seconds, speed)
                rows.append((item["id"], seconds, speed, uploaded, {**result, "wer": spoken_wer(item["spoken"],
                                                                                              result["text"])}))
                print_row(rows[-1])
        if not args.no_long:
            first, second = (items + [i for i in manifest() if i["format"] == "ogg"])[:2]
            audio = np.concatenate([decode_parts([AUDIO_FIXTURES / f"{i['id']}.{i['format']}"], i["format"])
                                    for i in (first, second)])
            audio = audio[: 60 * SAMPLE_RATE] if audio.size > 60 * SAMPLE_RATE else np.concatenate(
                [audio, np.zeros(60 * SAMPLE_RATE - audio.size, dtype=np.float32)])
            pcm = (np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes()
            service.order("B-LONG", first["modality"], first["procedure"])
            reference = first["spoken"] + " " + second["spoken"]
            result = stream(service, "B-LONG", pcm, 60.0, 1.0, fmt="pcm")
            rows.append(("60 s, PCM (2 joined)", 60.0, 1.0, float("nan"),
                         {**result, "wer": spoken_wer(reference, result["text"])}))
            print_row(rows[-1])
    finally:
        service.stop()
        # the worker's own account of each final pass (tail length, time)
        for line in (workdir / "serve.log").read_text().splitlines():
            if " final: " in line:
                print("  worker:", line.split(": live dictation ", 1)[-1])
        shutil.rmtree(workdir, ignore_errors=True)
    for speed in speeds:
        picked = [r for r in rows if r[2] == speed and r[3] == r[3]]
        delays = [d for r in picked for d in r[4]["delays"]]
        ratio = sum(r[4]["wer"] for r in picked) / max(1e-9, sum(r[3] for r in picked))
        print(f"speed {speed:g}: finalization median {statistics.median(r[4]['final_s'] for r in picked):.2f} s "
              f"max {max(r[4]['final_s'] for r in picked):.2f} s; partial delay median "
              f"{statistics.median(delays):.2f} s p95 {np.percentile(delays, 95):.2f} s; "
              f"WER streamed {statistics.mean(r[4]['wer'] for r in picked):.3f} vs uploaded "
              f"{statistics.mean(r[3] for r in picked):.3f} (ratio {ratio:.2f}); worker CPU "
              f"{statistics.mean(r[4]['cpu'] for r in picked):.0%}")
    print("targets: finalization <= 1.0 s (60 s dictation), partial delay median <= 2 s, WER ratio <= 1.1")


def print_row(row: tuple[str, float, float, float, dict[str, Any]]) -> None:
    name, seconds, speed, uploaded, r = row
    delays = r["delays"] or [float("nan")]
    print(f"{name:26} {seconds:5.1f}s x{speed:g}  final {r['final_s']:5.2f} s  delay median "
          f"{statistics.median(delays):5.2f} p95 {np.percentile(delays, 95):5.2f} s  wer {r['wer']:.3f} "
          f"(uploaded {uploaded:.3f})  worker cpu {r['cpu']:.0%}", flush=True)


if __name__ == "__main__":
    main()
