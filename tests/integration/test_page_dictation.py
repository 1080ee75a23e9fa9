"""Dictating on the page in headless Chromium with its fake microphone (a fixture WAV), against a
real `radservice serve` with the bundled model: an order over MLLP, Record (F4) into Findings,
committed words on the page before Stop, the final text in the report, signed final, the ORU at
a python-hl7 RIS and the SR in Orthanc. Screenshots while recording and after."""

from __future__ import annotations

import re
import time
import wave
from pathlib import Path

import pytest

from tests.browser import MISSING as NO_BROWSER
from tests.browser import add_person, chromium, fake_microphone
from tests.browser import sign_in as _sign_in
from tests.hl7_peer import RisClient, order, read_ack
from tests.pacs_peer import MISSING as NO_PACS
from tests.pacs_peer import orthanc
from tests.ris_peer import RisPeer
from tests.support import free_port, serve, write_config
from tests.transcripts import AUDIO_FIXTURES

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(bool(NO_BROWSER + NO_PACS), reason=f"{', '.join(NO_BROWSER + NO_PACS)} not installed")]

def padded_wav(source: Path, target: Path, before_s: float, after_s: float) -> float:
    """The fixture with silence around it (Chromium's fake microphone plays it in a loop); its
    speech's length in seconds."""
    with wave.open(str(source)) as reader:
        params = reader.getparams()
        frames = reader.readframes(reader.getnframes())
    silence = b"\0" * params.sampwidth * params.nchannels
    with wave.open(str(target), "wb") as writer:
        writer.setparams(params)
        writer.writeframes(silence * int(before_s * params.framerate) + frames
                           + silence * int(after_s * params.framerate))
    return params.nframes / params.framerate


def test_a_radiologist_dictates_findings_on_the_page_and_signs_them(tmp_path: Path) -> None:
    speech_s = padded_wav(AUDIO_FIXTURES / "ct_head_noncontrast.wav", tmp_path / "mic.wav", 1.0, 8.0)
    hl7_port, ris_port = free_port(), free_port()
    with RisPeer(ris_port) as ris, orthanc(tmp_path / "orthanc") as pacs:
        config = write_config(tmp_path, port=free_port(), hl7_port=hl7_port, workers=1,
                              worker_extra="poll_interval_s = 0.1",
                              extra=f'[ris]\nhost = "127.0.0.1"\nport = {ris_port}\nack_timeout_s = 2\n'
                                    f'[pacs]\nhost = "127.0.0.1"\nport = {pacs.dicom_port}\n'
                                    "[outbox]\npoll_interval_s = 0.2\nretry_initial_s = 0.2\nretry_max_s = 0.5\n"
                                    "[llm]\nenabled = false\n")
        with serve(config, tmp_path) as running, chromium(fake_microphone(str(tmp_path / "mic.wav"))) as browser:
            with RisClient(hl7_port) as client:
                assert read_ack(client.send(order("MIC-1", "MIC-ACC", procedure="CT HEAD WITHOUT CONTRAST",
                                                  family="MICTEST"))).code == "AA"
            add_person(config, tmp_path, "dr.mic", "radiologist")
            page = browser.new_context().new_page()
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            _sign_in(page, running.base_url, "dr.mic")
            page.get_by_role("link", name="MIC-ACC").click()
            findings = page.get_by_label("Findings")
            findings.click()
            page.keyboard.press("F4")
            started = time.monotonic()
            page.get_by_text(re.compile("Recording into Findings")).wait_for(timeout=15000)
            assert page.locator(".section.recording").count() == 1
            committed = page.locator(".live .committed")
            committed.filter(has_text=re.compile(r"\w+")).wait_for(timeout=20000)
            first_words_at = time.monotonic() - started
            page.screenshot(path=str(tmp_path / "recording.png"), full_page=True)
            # Stop once the whole dictation was heard (the fake microphone loops the file)
            time.sleep(max(0.0, 1.0 + speech_s + 1.5 - (time.monotonic() - started)))
            before_stop = committed.inner_text()
            assert before_stop.strip(), "no committed words before Stop"
            page.keyboard.press("F4")
            page.get_by_text("The dictation is in the report.").wait_for(timeout=90000)
            text = findings.input_value().lower()
            assert "hemorrhage" in text or "haemorrhage" in text, text
            assert "ventricles" in text, text
            page.screenshot(path=str(tmp_path / "dictated.png"), full_page=True)
            page.get_by_role("button", name="Sign final").click()
            deliveries = page.get_by_role("region", name="Deliveries")
            deliveries.get_by_text(re.compile(r"RIS: acked")).wait_for(timeout=30000)
            deliveries.get_by_text(re.compile(r"PACS: acked")).wait_for(timeout=30000)
            (oru,) = ris.wait_for(1)
            assert oru.field("OBR", 18) == "MIC-ACC" and oru.field("OBR", 25) == "F"
            assert "ventricles" in " ".join(oru.sections().values()).lower()
            assert len(pacs.instances()) == 1
            assert errors == [], errors
    print(f"first committed words on the page {first_words_at:.1f} s after F4")


def test_a_network_cut_while_dictating_loses_no_word_and_a_reload_leaves_it_to_transcribe(tmp_path: Path) -> None:
    """Through a TCP proxy that is cut for 4 s in the middle of the dictation: the page says it
    is reconnecting, keeps recording, resumes, and the final text is as good as the same
    recording uploaded as a file (WER at most 1.1 x). Then a reload while recording: the
    dictation is interrupted on the service and the page offers to transcribe it."""
    import httpx

    from radservice.db.session import make_engine, make_sessionmaker
    from tests.support import add_study, radservice, wait_job
    from tests.tcp_proxy import CuttableProxy
    from tests.transcripts import manifest, normalise, spoken_wer

    fixture = AUDIO_FIXTURES / "ct_head_noncontrast.wav"
    reference = next(i for i in manifest() if i["id"] == "ct_head_noncontrast")["spoken"]
    speech_s = padded_wav(fixture, tmp_path / "mic.wav", 1.0, 8.0)
    service_port, proxy_port = free_port(), free_port()
    config = write_config(tmp_path, port=service_port, workers=1, worker_extra="poll_interval_s = 0.1",
                          extra="[llm]\nenabled = false\n")
    with serve(config, tmp_path) as running, CuttableProxy(proxy_port, service_port) as proxy, \
            chromium(fake_microphone(str(tmp_path / "mic.wav"))) as browser:
        engine = make_engine(f"sqlite:///{tmp_path}/rs.db")
        for accession in ("CUT-1", "CUT-FILE", "CUT-RELOAD"):
            add_study(make_sessionmaker(engine), accession, procedure="CT HEAD WITHOUT CONTRAST")
        engine.dispose()
        token = radservice("user", "add", "dr.file", "--role", "radiologist", "--config", str(config)
                           ).stdout.split()[-1]
        add_person(config, tmp_path, "dr.cut", "radiologist")
        base = f"http://127.0.0.1:{proxy_port}"
        page = browser.new_context().new_page()
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        _sign_in(page, base, "dr.cut")
        page.get_by_role("link", name="CUT-1").click()
        page.get_by_label("Findings").click()
        page.keyboard.press("F4")
        started = time.monotonic()
        status = page.locator(".dictation-status")
        status.filter(has_text="Recording into Findings").wait_for(timeout=15000)
        time.sleep(max(0.0, 7.0 - (time.monotonic() - started)))
        cut_at = time.monotonic() - started
        proxy.cut(4.0)  # words 7-11 s into the dictation are spoken while the network is away
        status.filter(has_text="reconnecting").wait_for(timeout=10000)
        page.screenshot(path=str(tmp_path / "reconnecting.png"), full_page=True)
        status.filter(has_text="Recording into Findings").wait_for(timeout=30000)
        time.sleep(max(0.0, 1.0 + speech_s + 1.5 - (time.monotonic() - started)))
        page.keyboard.press("F4")
        page.get_by_text("The dictation is in the report.").wait_for(timeout=90000)

        with httpx.Client(base_url=running.base_url, headers={"Authorization": f"Bearer {token}"},
                          timeout=30) as http:
            deadline = time.monotonic() + 120
            while (streamed := http.get("/api/v1/studies/CUT-1").json()["dictations"][0])["final_pass"] == "pending" \
                    and streamed["status"] == "transcribed":
                assert time.monotonic() < deadline, streamed  # the accurate pass over the stored recording
                time.sleep(0.3)
            assert streamed["status"] == "transcribed"
            # every second spoken is in the stored recording: nothing was lost in the cut
            from radservice.pipeline.decode import SAMPLE_RATE, decode_parts
            stored = tmp_path / "data" / "audio" / f"{streamed['dictation_id']}.webm"
            stored_s = decode_parts([stored], "webm").size / SAMPLE_RATE
            assert 1.0 + speech_s <= stored_s <= 1.0 + speech_s + 6.0, stored_s
            assert sorted(p.name for p in stored.parent.glob(f"{streamed['dictation_id']}*")) == [stored.name]
            upload = http.post("/api/v1/studies/CUT-FILE/dictations", data={"section": "findings"},
                               files={"audio": ("dictation.wav", fixture.read_bytes(), "audio/wav")})
            assert upload.status_code == 202, upload.text
            assert wait_job(http, upload.json()["job_id"])["status"] == "done"
            (uploaded,) = http.get("/api/v1/studies/CUT-FILE").json()["dictations"]
            live_text = streamed["interim_transcript"] or streamed["transcript"]
            live_wer = spoken_wer(reference, live_text)
            accurate_wer = spoken_wer(reference, streamed["transcript"])
            uploaded_wer = spoken_wer(reference, uploaded["transcript"])
            print(f"WER streamed with a 4 s cut: live text {live_wer:.3f}, accurate pass {accurate_wer:.3f}; "
                  f"uploaded {uploaded_wer:.3f}; stored {stored_s:.1f} s of {1.0 + speech_s:.1f} s")
            # The words spoken while the network was away (their times from the uploaded file's
            # words; the fake microphone starts at F4, after 1 s of silence) are in the live text.
            during = [normalise(w["word"]) for w in uploaded["words"]
                      if w["start"] >= cut_at - 1.0 + 0.5 and w["end"] <= cut_at + 4.0 - 1.0 - 0.5
                      and len(normalise(w["word"])) >= 4 and normalise(w["word"]) not in ("period", "paragraph")]
            assert during, uploaded["words"]
            assert all(word in normalise(live_text).split() for word in during), (during, live_text)
            # The live text is what the cut path produced (the accurate pass re-reads the stored file).
            # One word of this short clip is within the model's run-to-run variance (it moved between
            # 0.061 and 0.121 here with the audio unchanged): the ratio over every fixture, with no
            # such allowance, is bench/page_dictation.py's.
            one_word = 1 / len(normalise(reference).split())
            assert live_wer <= 1.1 * uploaded_wer + one_word + 1e-9, (live_text, uploaded["transcript"])
            assert proxy.cuts == 1

            # a reload while recording: interrupted on the service, offered again on the page
            page.goto(base + "/#/study/CUT-RELOAD")
            page.get_by_label("Findings").click()
            page.keyboard.press("F4")
            status.filter(has_text="Recording into Findings").wait_for(timeout=15000)
            time.sleep(2)
            page.get_by_role("button", name="Scratch that").click()  # the take so far goes; a new one starts
            status.filter(has_text="Scratched").wait_for(timeout=10000)
            time.sleep(5)
            page.on("dialog", lambda dialog: dialog.accept())  # "leave the page?" while recording: yes
            page.reload()
            deadline = time.monotonic() + 30
            while http.get("/api/v1/studies/CUT-RELOAD").json()["dictations"][0]["status"] != "interrupted":
                assert time.monotonic() < deadline, "the reloaded page's dictation was not interrupted"
                time.sleep(0.2)
            page.reload()
            page.get_by_role("button", name="Transcribe it").click()
            page.get_by_text("The dictation is in the report.").wait_for(timeout=90000)
            assert page.get_by_label("Findings").input_value().strip()
        assert errors == [], errors


#: A Nuance PowerMic III as WebHID shows it to the page (dictation_support drives it): its input
#: report holds the buttons down as a 16-bit mask at byte 1. window.__powermic(mask) presses.
FAKE_POWERMIC = """
(() => {
  class FakeDevice extends EventTarget {
    constructor() {
      super();
      Object.assign(this, { vendorId: 1364, productId: 4097, productName: "PowerMic III (test)",
        collections: [{ usagePage: 1, usage: 0 }], opened: false, sent: [] });
    }
    async open() { this.opened = true; }
    async close() { this.opened = false; }
    async sendReport(id, data) { this.sent.push([id, Array.from(data)]); }
  }
  const device = new FakeDevice();
  class FakeHid extends EventTarget {
    async getDevices() { return [device]; }
    async requestDevice() { return [device]; }
  }
  Object.defineProperty(navigator, "hid", { value: new FakeHid(), configurable: true });
  window.__powermic = (mask) => {
    const event = new Event("inputreport");
    event.data = new DataView(new Uint8Array([0, mask & 255, mask >> 8]).buffer);
    device.dispatchEvent(event);
  };
})();
"""
RECORD, TAB_FORWARD = 1 << 2, 1 << 3


def test_hold_space_to_talk_and_a_powermic_record_button(tmp_path: Path) -> None:
    """[web] hold_key = "Space": a tap types a space, a hold records until released. A
    dictation microphone (a PowerMic III behind a fake WebHID, driven by the npm package
    dictation_support as served by the service): its name shown, Tab forward moves to the next
    section, a short Record press starts and another stops."""
    from radservice.db.session import make_engine, make_sessionmaker
    from tests.support import add_study

    if not (Path(__file__).resolve().parents[2] / "node_modules" / "dictation_support").is_dir():
        pytest.fail("node_modules/dictation_support is missing: run npm ci")
    padded_wav(AUDIO_FIXTURES / "ct_head_noncontrast.wav", tmp_path / "mic.wav", 0.5, 2.0)
    config = write_config(tmp_path, port=free_port(), workers=1, worker_extra="poll_interval_s = 0.1",
                          extra='[llm]\nenabled = false\n[web]\nhold_key = "Space"\n')
    with serve(config, tmp_path) as running, chromium(fake_microphone(str(tmp_path / "mic.wav"))) as browser:
        engine = make_engine(f"sqlite:///{tmp_path}/rs.db")
        add_study(make_sessionmaker(engine), "HOLD-1", procedure="CT HEAD WITHOUT CONTRAST")
        engine.dispose()
        add_person(config, tmp_path, "dr.hold", "radiologist")
        page = browser.new_context().new_page()
        page.add_init_script(FAKE_POWERMIC)
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        _sign_in(page, running.base_url, "dr.hold")
        page.goto(f"{running.base_url}/#/study/HOLD-1")
        findings = page.get_by_label("Findings")
        findings.click()
        # a tap of Space types a space, as ever
        page.keyboard.type("Typed by hand")
        assert findings.input_value() == "Typed by hand"
        assert page.locator(".section.recording").count() == 0
        # released just after it became a hold (the text is being saved, the microphone opening):
        # the take stops as soon as it has started, never a microphone left on
        page.keyboard.down("Space")
        time.sleep(0.4)
        page.keyboard.up("Space")
        def dictations() -> list[dict[str, str]]:
            return list(page.evaluate("async () => (await (await fetch('/api/v1/studies/HOLD-1', {headers: "
                                      "{'X-Radservice-User': 'dr.hold'}})).json()).dictations"))

        deadline = time.monotonic() + 30
        while not (quick := dictations()) or quick[0]["status"] in ("recording", "finalizing"):
            assert time.monotonic() < deadline, quick
            time.sleep(0.2)
        page.wait_for_function("() => !document.querySelector('.section.recording')"
                               " && !document.getElementById('record').disabled", timeout=30000)
        assert findings.input_value().startswith("Typed by hand")
        findings.press("End")
        page.keyboard.down("Space")
        page.get_by_text(re.compile("Recording into Findings")).wait_for(timeout=15000)
        page.wait_for_function("() => (document.querySelector('.live .committed')?.textContent || '')"
                               ".split(/\\s+/).filter(Boolean).length >= 6", timeout=30000)
        page.keyboard.up("Space")
        page.get_by_text("The dictation is in the report.").wait_for(timeout=90000)
        held = findings.input_value()
        assert held.startswith("Typed by hand") and len(held.split()) >= 3 + 6, held

        # Space released on a button still clicks it (only a press taken as the hold is held)
        page.locator("#help-button").focus()
        page.keyboard.press("Space")
        page.get_by_role("dialog", name="Keyboard shortcuts").wait_for()
        page.keyboard.press("Escape")
        # the microphone the browser was allowed before is there at once, by name
        page.get_by_text("Buttons of: PowerMic III (test)").wait_for(timeout=10000)
        assert page.get_by_role("button", name="Connect dictation microphone").is_visible()
        findings.click()
        page.evaluate(f"() => {{ window.__powermic({TAB_FORWARD}); window.__powermic(0); }}")
        assert page.evaluate("() => document.activeElement.name") == "impression"
        page.evaluate(f"() => {{ window.__powermic({RECORD}); window.__powermic(0); }}")
        page.get_by_text(re.compile("Recording into Impression")).wait_for(timeout=15000)
        page.locator(".live .committed").filter(has_text=re.compile(r"\w+")).wait_for(timeout=30000)
        page.screenshot(path=str(tmp_path / "powermic-recording.png"), full_page=True)
        page.evaluate(f"() => {{ window.__powermic({RECORD}); window.__powermic(0); }}")
        page.get_by_text("The dictation is in the report.").wait_for(timeout=90000)
        # into Impression (what the rules do with a spoken "Findings" in it is theirs), and merged
        study = page.evaluate("async () => (await fetch('/api/v1/studies/HOLD-1', {headers: "
                              "{'X-Radservice-User': 'dr.hold'}})).json()")
        report = page.evaluate(f"async () => (await fetch('/api/v1/reports/{study['report_id']}', {{headers: "
                               "{'X-Radservice-User': 'dr.hold'}})).json()")
        taken = [(d["section"], d["dictation_id"] in report["dictation_ids"]) for d in study["dictations"]]
        assert taken[-2:] == [("findings", True), ("impression", True)], taken
        words = len((findings.input_value() + " " + page.get_by_label("Impression").input_value()).split())
        assert words > len(held.split()), (held, words)
        assert errors == [], errors
