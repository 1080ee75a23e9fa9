"""Dictating on the page: headless Chromium's fake microphone plays each fixture into the study
page of a real `radservice serve` (one worker), against the service's own figures in the same run.

    .venv/bin/python bench/page_dictation.py [--fixtures ct_head_noncontrast,...]

For each fixture (decoded to a 16 kHz WAV with 1 s of silence before it): streamed as that WAV
by a Python WebSocket client at real time (the service alone, as bench/stream.py: "wav"), then
dictated on the page (Record with F4, Stop with F4 once the audio has played: "page"), then the
page's own recording (Chromium's MediaRecorder WebM/Opus, as stored) streamed again by the
Python client at real time ("webm": the service alone with the very bytes the page sent, so
the difference to "page" is what the browser and the page add). Printed per fixture and in
total, for each: the delay of each committed word behind speech (when it first showed as
committed text, minus when its audio ended; median and p95) and the time from Stop to the final
text (service: from sending "stop" to the "final" event; page: from the F4 key to the final text
shown on the page). For the service alone, a word's audio ended when the Python client sent the
chunk holding it plus the 250 ms that chunk lasts (bench/stream.py counts from the sending only:
a live source has a chunk's audio at its end, as MediaRecorder does). On the page a word's
audio ended at MediaRecorder's start plus the word's end
in the dictation's own words (the recording's timeline); Stop is pressed 0.3 s after the speech
ends on the fake microphone's clock (from when getUserMedia handed it over). Target: the page adds
at most 0.3 s to each of the service's figures.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import wave
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

from bench.stream import CHUNK_S, Service, cpu_seconds, stream  # noqa: E402
from radservice.pipeline.decode import SAMPLE_RATE, decode_parts  # noqa: E402
from tests.browser import chromium, fake_microphone  # noqa: E402
from tests.transcripts import AUDIO_FIXTURES, manifest, normalise  # noqa: E402

PAD_S = 1.0
#: Stop comes this long after the end of the speech, on the page and for the service alone.
STOP_AFTER_S = 0.3
PASSWORD = "bench page password"

# Runs in the page before its own scripts: when the microphone was handed over, when F4 stopped,
# each change of the committed text, and when the final text was shown.
PROBE = """
window.__bench = { gum: null, recording: null, stop: null, final: null, commits: [] };
const start = MediaRecorder.prototype.start;
MediaRecorder.prototype.start = function (...args) {
  if (window.__bench.recording === null) {
    window.__bench.recording = performance.now();
    this.addEventListener("dataavailable", () => {
      if (window.__bench.firstChunk === undefined) window.__bench.firstChunk = performance.now();
    });
  }
  return start.apply(this, args);
};
const open = navigator.mediaDevices.getUserMedia.bind(navigator.mediaDevices);
navigator.mediaDevices.getUserMedia = async (constraints) => {
  const stream = await open(constraints);
  window.__bench.gum = performance.now();
  return stream;
};
document.addEventListener("keydown", (event) => {
  if (event.key === "F4" && window.__bench.gum !== null && window.__bench.stop === null) {
    window.__bench.stop = performance.now();
  }
}, true);
new MutationObserver(() => {
  const committed = document.querySelector(".live .committed");
  const b = window.__bench;
  if (committed && b.final === null) {
    const text = committed.textContent;
    if (!b.commits.length || b.commits[b.commits.length - 1][1] !== text) b.commits.push([performance.now(), text]);
  }
  const status = document.querySelector(".dictation-status");
  if (status && b.final === null && status.textContent.startsWith("Final text ready")) b.final = performance.now();
}).observe(document, { subtree: true, childList: true, characterData: true });
"""


def wav_of(item: dict[str, str], target: Path, after_s: float) -> float:
    """The fixture as a 16 kHz mono WAV with PAD_S of silence before and ``after_s`` after; the
    speech's length in s."""
    audio = decode_parts([AUDIO_FIXTURES / f"{item['id']}.{item['format']}"], item["format"])
    pcm = (np.clip(audio, -1, 1) * 32767).astype("<i2")
    with wave.open(str(target), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(SAMPLE_RATE)
        out.writeframes(np.concatenate([np.zeros(int(PAD_S * SAMPLE_RATE), dtype="<i2"), pcm,
                                        np.zeros(int(after_s * SAMPLE_RATE), dtype="<i2")]).tobytes())
    return float(audio.size / SAMPLE_RATE)


def word_ends(words: list[dict[str, Any]]) -> list[tuple[float, int]]:
    """For each final word: when its audio ends, and how many normalised words the text has up to it."""
    out, text = [], ""
    for w in words:
        text = (text + " " + w["word"]).strip() if not w["word"].startswith((".", ",")) else text + w["word"]
        out.append((float(w["end"]), len(normalise(text).split())))
    return out


def browser_cpu_seconds() -> float:
    """CPU time of every Chromium process so far (the browser shares this machine's two cores
    with the service here; at a reading station it has its own)."""
    total = 0.0
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if b"chrom" in (proc / "cmdline").read_bytes().split(b"\0")[0]:
                    total += cpu_seconds(int(proc.name))
            except OSError:
                continue
    return total


def on_page(service: Service, accession: str, wav: Path, seconds: float) -> dict[str, Any]:
    with chromium(fake_microphone(str(wav))) as browser:
        page = browser.new_context().new_page()
        page.add_init_script(PROBE)
        page.goto(service.base + "/")
        page.get_by_label("Username").fill("page")
        page.get_by_label("Password").fill(PASSWORD)
        page.get_by_role("button", name="Sign in").click()
        page.goto(f"{service.base}/#/study/{accession}")
        page.get_by_label("Findings").click()
        cpu0, t0 = browser_cpu_seconds(), time.monotonic()
        page.keyboard.press("F4")
        page.locator(".dictation-status").filter(has_text="Recording into").wait_for(timeout=30000)
        gum = page.evaluate("() => window.__bench.gum")
        now = page.evaluate("() => performance.now()")
        wait = (gum + (PAD_S + seconds + STOP_AFTER_S) * 1000 - now) / 1000
        if not 0 <= wait <= PAD_S + seconds + STOP_AFTER_S:
            raise RuntimeError(f"the page's clock is off: microphone at {gum} ms, now {now} ms")
        time.sleep(wait)
        page.keyboard.press("F4")
        browser_cpu = (browser_cpu_seconds() - cpu0) / (time.monotonic() - t0)
        page.get_by_text("Final text ready").wait_for(timeout=60000)
        probe = page.evaluate("() => window.__bench")
        page.get_by_text("The dictation is in the report.").wait_for(timeout=60000)
    study = service.http.get(f"/api/v1/studies/{accession}").json()
    (dictation,) = study["dictations"]
    live_words = dictation["words"] or []
    commits = [(t, len(normalise(text).split())) for t, text in probe["commits"]]
    delays = []
    for end, count in word_ends(live_words):
        first = next((t for t, n in commits if n >= count), None)
        if first is not None and first <= probe["stop"]:
            # the word's time is on the recording's timeline (the silence before the speech included)
            delays.append((first - (probe["recording"] + end * 1000)) / 1000)
    return {"delays": delays, "final_s": (probe["final"] - probe["stop"]) / 1000,
            "first_chunk_s": (probe["firstChunk"] - probe["recording"]) / 1000, "browser_cpu": browser_cpu,
            "dictation_id": dictation["dictation_id"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fixtures", default="", help="comma-separated fixture ids (default: all)")
    args = parser.parse_args()
    items = manifest()
    if args.fixtures:
        items = [i for i in items if i["id"] in args.fixtures.split(",")]
    workdir = Path(tempfile.mkdtemp(prefix="rs-page-dictation-"))
    service = Service(workdir)
    subprocess.run([sys.executable, "-m", "radservice.cli", "user", "add", "page", "--role", "radiologist",
                    "--password-stdin", "--config", str(service.config)], input=PASSWORD + "\n", text=True,
                   capture_output=True, check=True)
    runs: dict[str, list[dict[str, Any]]] = {"wav": [], "webm": [], "page": []}
    try:
        for n, item in enumerate(items):
            mic, sent = workdir / f"{item['id']}.wav", workdir / f"{item['id']}-stream.wav"
            seconds = wav_of(item, mic, 8.0)  # the fake microphone loops: silence until Stop
            wav_of(item, sent, STOP_AFTER_S)  # the service alone gets "stop" as long after the speech
            service.order(f"S-{n}", item["modality"], item["procedure"])
            service.order(f"P-{n}", item["modality"], item["procedure"])
            service.order(f"R-{n}", item["modality"], item["procedure"])
            alone = stream(service, f"S-{n}", sent.read_bytes(), PAD_S + seconds + STOP_AFTER_S, 1.0)
            page = on_page(service, f"P-{n}", mic, seconds)
            (recording,) = (workdir / "data" / "audio").glob(f"{page['dictation_id']}.*")
            again = stream(service, f"R-{n}", recording.read_bytes(),
                           decode_parts([recording], recording.suffix[1:]).size / SAMPLE_RATE, 1.0)
            # bench/stream.py counts from when a chunk was sent; a live source has a chunk's audio
            # only at its end: from speech, as the page is measured, the service alone is one chunk later
            for run in (alone, again):
                run["delays"] = [d + CHUNK_S for d in run["delays"]]
            for name, run in (("wav", alone), ("webm", again), ("page", page)):
                runs[name].append(run)
            print(f"{item['id']:24} {seconds:5.1f}s " + "  ".join(
                f"{name}: delay median {statistics.median(r['delays']):4.2f} p95 {np.percentile(r['delays'], 95):4.2f}"
                f" final {r['final_s']:4.2f}" for name, r in (("wav", alone), ("webm", again), ("page", page)))
                + f"  (page's first chunk {page['first_chunk_s'] * 1000:.0f} ms after MediaRecorder.start;"
                f" Chromium used {page['browser_cpu']:.0%} of a core while recording)",
                flush=True)
    finally:
        service.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    for name, done in runs.items():
        delays = [d for r in done for d in r["delays"]]
        finals = [r["final_s"] for r in done]
        print(f"{name:8} word delay median {statistics.median(delays):.2f} s p95 {np.percentile(delays, 95):.2f} s; "
              f"Stop to final text median {statistics.median(finals):.2f} s max {max(finals):.2f} s")
    print("target: the page adds at most 0.3 s to the service's word delay and Stop-to-final figures (webm)")


if __name__ == "__main__":
    main()
