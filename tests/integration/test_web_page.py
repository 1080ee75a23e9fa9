"""The radiologists' page in headless Chromium against a real `radservice serve`: an order over
MLLP, sign-in, the worklist, the study and its report typed, a conflict from a second tab, the
final signature and both deliveries acked at the RIS (python-hl7) and the PACS (Orthanc); a
resident without "Sign final"; a wrong password in words. Screenshots are saved in the test's
folder."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from tests.browser import MISSING as NO_BROWSER
from tests.browser import PASSWORD, add_person, chromium, new_password
from tests.browser import sign_in as _sign_in
from tests.hl7_peer import RisClient, order, read_ack
from tests.pacs_peer import MISSING as NO_PACS
from tests.pacs_peer import orthanc
from tests.ris_peer import RisPeer
from tests.support import free_port, serve, write_config

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(bool(NO_BROWSER + NO_PACS), reason=f"{', '.join(NO_BROWSER + NO_PACS)} not installed")]

def _type_into_an_ended_session(page: Any, config: Path, cwd: Path, username: str, password: str,
                                text: str) -> None:
    """The user's session ends on the server (a new password) while Findings is being typed
    into: saving ``text`` brings the sign-in form with its message."""
    new_password(config, cwd, username, password)
    page.get_by_label("Findings").press("End")
    page.keyboard.type(text)
    page.keyboard.press("Control+s")
    page.get_by_role("alert").filter(has_text="Your session has ended").wait_for(timeout=15000)


def test_a_radiologist_signs_a_typed_report_on_the_page_and_sees_it_delivered(tmp_path: Path) -> None:
    hl7_port, ris_port = free_port(), free_port()
    with RisPeer(ris_port) as ris, orthanc(tmp_path / "orthanc") as pacs:
        config = write_config(tmp_path, port=free_port(), hl7_port=hl7_port,
                              extra=f'[ris]\nhost = "127.0.0.1"\nport = {ris_port}\nack_timeout_s = 2\n'
                                    f'[pacs]\nhost = "127.0.0.1"\nport = {pacs.dicom_port}\n'
                                    "[outbox]\npoll_interval_s = 0.2\nretry_initial_s = 0.2\nretry_max_s = 0.5\n"
                                    "[llm]\nenabled = false\n")
        with serve(config, tmp_path) as running, chromium() as browser:
            with RisClient(hl7_port) as client:
                assert read_ack(client.send(order("WEB-1", "WEB-ACC", priority="S", family="PAGETEST",
                                                  procedure="CT CHEST"))).code == "AA"
                assert read_ack(client.send(order("WEB-2", "WEB-RES", patient_id="MRN-T-2",
                                                  procedure="CT CHEST"))).code == "AA"
            add_person(config, tmp_path, "dr.page", "radiologist")
            add_person(config, tmp_path, "res.page", "resident")
            base = running.base_url
            errors: list[str] = []
            context = browser.new_context()
            page = context.new_page()
            # answers the page expects (401, 409) are logged by the browser as failed loads; any
            # other error (a script error, a refused script or style) fails the test
            page.on("console", lambda m: errors.append(m.text)
                    if m.type == "error" and not re.search(r"status of (401|409)", m.text) else None)
            page.on("pageerror", lambda e: errors.append(str(e)))

            # a wrong password is said in words, on the page
            _sign_in(page, base, "dr.page", "not the password")
            alert = page.get_by_role("alert")
            alert.wait_for()
            assert alert.inner_text() == "Wrong username or password."

            _sign_in(page, base, "dr.page")
            worklist = page.get_by_role("table")
            worklist.get_by_role("columnheader", name="Accession").wait_for()
            row = worklist.get_by_role("row").filter(has_text="WEB-ACC")
            assert "STAT" in row.inner_text() and "PAGETEST" in row.inner_text()
            page.screenshot(path=str(tmp_path / "worklist.png"), full_page=True)
            row.get_by_role("link", name="WEB-ACC").click()

            findings = page.get_by_label("Findings")
            impression = page.get_by_label("Impression")
            findings.fill("Lungs: clear. No pleural effusion.")
            impression.fill("No acute cardiopulmonary finding.")
            page.get_by_text(re.compile("draft saved")).wait_for(timeout=15000)

            # a second tab changes the findings: the first tab's next edit is a visible conflict
            other = context.new_page()
            other.goto(page.url)
            other.get_by_label("Findings").fill("Lungs: clear. Small left pleural effusion.")
            other.get_by_text(re.compile("draft saved")).wait_for(timeout=15000)
            impression.fill("No acute finding.")
            page.get_by_text(re.compile("changed elsewhere")).wait_for(timeout=15000)
            page.get_by_role("button", name="Load the current text").click()
            page.get_by_text("The current text is loaded.").wait_for()
            assert findings.input_value() == "Lungs: clear. Small left pleural effusion."
            assert page.get_by_label("Your Impression (not saved)").input_value() == "No acute finding."
            other.close()

            page.get_by_role("button", name="Sign final").click()
            deliveries = page.get_by_role("region", name="Deliveries")
            deliveries.get_by_text(re.compile(r"RIS: acked")).wait_for(timeout=30000)
            deliveries.get_by_text(re.compile(r"PACS: acked")).wait_for(timeout=30000)
            assert page.get_by_role("button", name="Add addendum").is_visible()
            page.screenshot(path=str(tmp_path / "study.png"), full_page=True)
            (oru,) = ris.wait_for(1)
            assert oru.field("OBR", 18) == "WEB-ACC" and oru.field("OBR", 25) == "F"
            assert "Small left pleural effusion." in oru.sections().get("18782-3", "")
            assert len(pacs.instances()) == 1
            page.get_by_role("button", name="Sign out").click()
            page.get_by_label("Username").wait_for()
            assert errors == [], errors

            # a resident may sign preliminary, never final
            resident = browser.new_context().new_page()
            _sign_in(resident, base, "res.page")
            resident.get_by_role("link", name="WEB-RES").click()
            resident.get_by_label("Findings").fill("Lungs: clear.")
            resident.get_by_text(re.compile("draft saved")).wait_for(timeout=15000)
            assert resident.get_by_role("button", name="Sign preliminary").is_visible()
            assert resident.get_by_role("button", name="Sign final").count() == 0
            # signing by keyboard: the shortcut moves to the button, Enter signs
            resident.get_by_label("Findings").press("Control+Alt+p")
            assert resident.evaluate("document.activeElement.id") == "sign-preliminary"
            resident.keyboard.press("Enter")
            resident.get_by_text("Signed preliminary, version 1.").wait_for(timeout=15000)
            resident.get_by_role("region", name="Deliveries").get_by_text(re.compile("RIS: acked")).wait_for(
                timeout=30000)
            # a final report: read-only for the resident, no addendum (a radiologist's signature)
            resident.goto(base + "/#/?status=final")
            resident.get_by_role("link", name="WEB-ACC").click()
            resident.get_by_label("Findings").wait_for()
            assert resident.get_by_label("Findings").get_attribute("readonly") is not None
            assert resident.get_by_role("button", name="Add addendum").count() == 0
            # the radiologist signs in again and adds one: a new version, delivered as a correction
            _sign_in(page, base, "dr.page")
            page.goto(base + "/#/?status=final")
            page.get_by_role("link", name="WEB-ACC").click()
            page.get_by_label("Addendum").fill("Compared with the outside study: unchanged.")
            page.get_by_role("button", name="Add addendum").click()
            page.get_by_text("Addendum signed, version 2.").wait_for(timeout=15000)
            messages = ris.wait_for(3)
            assert [(m.field("OBR", 18), m.field("OBR", 25)) for m in messages] == [
                ("WEB-ACC", "F"), ("WEB-RES", "P"), ("WEB-ACC", "C")]
            assert any("outside study: unchanged" in text for text in messages[2].sections().values())
            page.get_by_role("region", name="Deliveries").get_by_text(re.compile("RIS: acked")).wait_for(
                timeout=30000)
            assert errors == [], errors
        assert (tmp_path / "worklist.png").stat().st_size > 0 and (tmp_path / "study.png").stat().st_size > 0


def test_by_keyboard_alone_and_through_an_ended_session_nothing_typed_is_lost(tmp_path: Path) -> None:
    """Sign-in, worklist, study, sections, save and help by keyboard alone; a session ended on the
    server (a new password) while typing: back to sign-in with a message, and after signing in
    again the text comes back and is saved; repeated failures lock with a message in words."""
    from playwright.sync_api import expect

    from radservice.db.session import make_engine, make_sessionmaker
    from tests.support import add_report, add_study

    hl7_port = free_port()
    config = write_config(tmp_path, port=free_port(), hl7_port=hl7_port, extra="[llm]\nenabled = false\n")
    with serve(config, tmp_path) as running, chromium() as browser:
        engine = make_engine(f"sqlite:///{tmp_path}/rs.db")
        add_study(make_sessionmaker(engine), "KB-1", procedure="CT CHEST")
        add_study(make_sessionmaker(engine), "KB-2", procedure="CT CHEST")
        engine.dispose()
        add_person(config, tmp_path, "dr.keys", "radiologist")
        page = browser.new_context().new_page()
        page.goto(running.base_url + "/")
        page.get_by_label("Username").wait_for()
        assert page.evaluate("document.activeElement.id") == "username"  # the field has the focus
        page.keyboard.type("dr.keys")
        page.keyboard.press("Tab")
        page.keyboard.type(PASSWORD)
        page.keyboard.press("Enter")
        page.get_by_role("link", name="KB-1").wait_for()
        for _ in range(40):  # Tab through the page to the study's link
            page.keyboard.press("Tab")
            if page.evaluate("document.activeElement.dataset.key") == "|KB-1":
                break
        else:
            raise AssertionError("the study's link cannot be reached with Tab")
        page.keyboard.press("Enter")
        page.get_by_label("Findings").wait_for()
        page.keyboard.press("?")
        help_dialog = page.get_by_role("dialog", name="Keyboard shortcuts")
        help_dialog.wait_for()
        page.keyboard.press("Escape")
        help_dialog.wait_for(state="hidden")
        # "?" alone can be turned off (a single-character shortcut, WCAG 2.1.4); the button still opens the help
        page.get_by_role("button", name="Shortcuts (?)").click()
        help_dialog.get_by_label(re.compile("alone opens this help")).uncheck()
        page.keyboard.press("Escape")
        page.keyboard.press("?")
        page.wait_for_timeout(300)
        assert not help_dialog.is_visible()
        page.get_by_role("button", name="Shortcuts (?)").click()
        help_dialog.get_by_label(re.compile("alone opens this help")).check()
        page.keyboard.press("Escape")
        help_dialog.wait_for(state="hidden")
        for _ in range(4):  # Clinical history, Technique, Comparison, Findings
            page.keyboard.press("Alt+ArrowDown")
        assert page.evaluate("document.activeElement.id") == "section-findings"
        page.keyboard.type("Lungs: clear.")
        page.keyboard.press("Control+s")
        page.get_by_text(re.compile("draft saved")).wait_for(timeout=15000)

        # the session ends on the server while the radiologist types
        _type_into_an_ended_session(page, config, tmp_path, "dr.keys", "a brand new password", " No effusion.")
        page.get_by_label("Username").fill("dr.keys")
        page.get_by_label("Password").fill("a brand new password")
        page.get_by_role("button", name="Sign in").click()
        page.get_by_text("Text you had not saved is back").wait_for(timeout=15000)
        page.get_by_text(re.compile("draft saved")).wait_for(timeout=15000)
        assert page.get_by_label("Findings").input_value() == "Lungs: clear. No effusion."

        # a report made meanwhile (a dictation finished) is not overwritten by the first keystrokes
        page.goto(running.base_url + "/#/study/KB-2")
        page.get_by_label("Impression").wait_for()
        engine = make_engine(f"sqlite:///{tmp_path}/rs.db")
        add_report(make_sessionmaker(engine), "KB-2", {"findings": "Dictated: small nodule."})
        engine.dispose()
        page.get_by_label("Impression").fill("Typed before seeing the dictation.")
        page.get_by_text(re.compile("changed elsewhere")).wait_for(timeout=15000)
        page.get_by_role("button", name="Load the current text").click()
        page.get_by_text("The current text is loaded.").wait_for()
        assert page.get_by_label("Findings").input_value() == "Dictated: small nodule."

        # repeated failures: the lock is said in words
        page.get_by_role("button", name="Sign out").click()
        for _ in range(5):
            page.get_by_label("Username").fill("dr.keys")
            page.get_by_label("Password").fill("wrong wrong wrong")
            page.get_by_role("button", name="Sign in").click()
            page.get_by_role("alert").wait_for()
            expect(page.get_by_role("button", name="Sign in")).to_be_enabled()
        assert "locked for 15 minutes" in page.get_by_role("alert").inner_text()


AXE = Path(__file__).resolve().parents[2] / "node_modules" / "axe-core" / "axe.min.js"


def _audit(page: Any) -> list[str]:
    """axe-core's WCAG 2.x A and AA rules on the page as it is now: the violations, in words."""
    page.add_script_tag(path=str(AXE))
    result = page.evaluate("""async () => {
      const r = await axe.run(document, {runOnly: {type: 'tag',
        values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa', 'wcag22aa']}});
      return r.violations.map((v) => `${v.id}: ${v.help} (${v.nodes.map((n) => n.target.join(' ')).join(', ')})`);
    }""")
    return list(result)


@pytest.mark.skipif(not AXE.exists(), reason="axe-core not installed (npm ci)")
def test_the_page_passes_an_automated_accessibility_audit(tmp_path: Path) -> None:
    """Sign-in, worklist, a study with a report, its refinement notes, words to check and the
    help overlay: no WCAG 2.2 A/AA violation axe-core can find (contrast, names, structure).
    Words to check leave their list when accepted or edited out of the text."""
    from radservice.db.session import make_engine, make_sessionmaker, session_scope
    from radservice.dictation.models import Dictation
    from radservice.reports.models import Report
    from radservice.worklist.models import Study
    from tests.support import add_report, add_study

    config = write_config(tmp_path, port=free_port(), extra="[llm]\nenabled = false\n")
    with serve(config, tmp_path) as running, chromium() as browser:
        engine = make_engine(f"sqlite:///{tmp_path}/rs.db")
        sessions = make_sessionmaker(engine)
        add_study(sessions, "AX-1", procedure="CT CHEST")
        report_id = add_report(sessions, "AX-1", {"findings": "Lungs: clear. Small pericholecystic fluid.",
                                                  "impression": "No acute finding."})
        with session_scope(sessions) as session:
            study = session.query(Study).filter_by(accession_number="AX-1").one()
            session.add(Dictation(id="00000000-0000-4000-8000-00000000ax01", study_id=study.id, section="findings",
                                  status="transcribed", audio_format="wav", audio_bytes=1, duration_s=3.0,
                                  transcript="lungs colon clear small pericholecystic fluid",
                                  words=[{"word": "lungs", "start": 0, "end": 0.4, "probability": 0.97},
                                         {"word": "pericholecystic", "start": 1, "end": 1.6, "probability": 0.31},
                                         {"word": "fluid", "start": 1.6, "end": 2, "probability": 0.42}]))
            report = session.get(Report, report_id)
            assert report is not None
            report.notes = [{"dictation_id": "00000000-0000-4000-8000-00000000ax01", "rule": "punctuation",
                             "before": "lungs colon clear", "after": "Lungs: clear."}]
        engine.dispose()
        add_person(config, tmp_path, "dr.axe", "radiologist")
        page = browser.new_context(bypass_csp=True).new_page()  # the audit's script is injected
        page.goto(running.base_url + "/")
        page.get_by_label("Username").wait_for()
        problems = {"sign-in": _audit(page)}
        _sign_in(page, running.base_url, "dr.axe")
        page.get_by_role("link", name="AX-1").wait_for()
        problems["worklist"] = _audit(page)
        page.get_by_role("link", name="AX-1").click()
        page.get_by_label("Findings").wait_for()
        page.get_by_text(re.compile(r"What the rules and the LLM changed \(1\)")).click()
        def marked(kind: str) -> str:
            return re.sub(r"\s+", "", "".join(page.locator(f".diff {kind}").all_inner_texts()))

        assert marked("ins") == "Lungs:clear." and marked("del") == "lungscolonclear"
        checks = page.locator("[data-unsure=findings]")
        assert checks.locator("mark").all_inner_texts() == ["pericholecystic", "fluid"]
        # highlighted in the text itself: a copy drawn exactly behind the text area
        findings = page.get_by_label("Findings")
        assert page.locator(".field .backdrop mark").all_inner_texts() == ["pericholecystic", "fluid"]
        area = findings.bounding_box()
        backdrop = page.locator(".field", has=findings).locator(".backdrop").bounding_box()
        assert area is not None and backdrop == area
        mark = page.locator(".field .backdrop mark").last.bounding_box()
        assert mark is not None and area["x"] < mark["x"] < area["x"] + area["width"]
        page.screenshot(path=str(tmp_path / "unsure-words.png"))
        checks.get_by_role("button", name="Select “fluid” in the text").click()
        assert page.evaluate("() => { const a = document.activeElement;"
                             " return [a.id, a.value.slice(a.selectionStart, a.selectionEnd)]; }") == [
            "section-findings", "fluid"]
        problems["study"] = _audit(page)
        checks.get_by_role("button", name="Accept “pericholecystic”").click()
        assert page.locator(".field .backdrop mark").all_inner_texts() == ["fluid"]
        page.get_by_label("Findings").fill("Lungs: clear. Small amount of free liquid.")
        assert page.locator("[data-unsure=findings]").count() == 0  # "fluid" was edited out
        page.get_by_label("Findings").blur()
        page.keyboard.press("?")
        page.get_by_role("dialog", name="Keyboard shortcuts").wait_for()
        problems["help"] = _audit(page)
        page.keyboard.press("Escape")
        # the audit is not vacuous: a nameless button and pale text on this page are found
        page.evaluate("""() => {
          const probe = document.createElement('div');
          probe.innerHTML = '<button></button><p style="color:#ccc;background:#fff">pale</p>';
          document.querySelector('main').append(probe);
        }""")
        found = " ".join(_audit(page))
        assert "button-name" in found and "color-contrast" in found, found
    assert all(not found for found in problems.values()), problems


def test_one_accession_number_of_two_issuers_opens_and_saves_the_study_clicked(tmp_path: Path) -> None:
    """An accession number is unique only with its issuer: the worklist's link names it, the
    draft is made on that study, and an address without it says the issuer is needed."""
    from sqlalchemy import select

    from radservice.db.session import make_engine, make_sessionmaker
    from radservice.reports.models import Report
    from radservice.worklist.models import Study
    from tests.support import add_study

    config = write_config(tmp_path, port=free_port(), extra="[llm]\nenabled = false\n")
    with serve(config, tmp_path) as running, chromium() as browser:
        engine = make_engine(f"sqlite:///{tmp_path}/rs.db")
        sessions = make_sessionmaker(engine)
        add_study(sessions, "TWO-1", procedure="CT CHEST", issuer="HOSP-A", patient_id="MRN-A")
        add_study(sessions, "TWO-1", procedure="CT ABDOMEN", issuer="HOSP-B", patient_id="MRN-B", minutes=1)
        add_person(config, tmp_path, "dr.issuer", "radiologist")
        page = browser.new_context().new_page()
        _sign_in(page, running.base_url, "dr.issuer")
        links = page.get_by_role("link", name="TWO-1")
        links.first.wait_for()
        assert links.count() == 2
        page.get_by_role("row").filter(has_text="CT ABDOMEN").get_by_role("link", name="TWO-1").click()
        page.get_by_text("MRN-B").first.wait_for()
        assert "issuer=HOSP-B" in page.url
        page.get_by_label("Findings").fill("Liver: normal.")
        page.get_by_text(re.compile("draft saved")).wait_for(timeout=15000)
        with sessions() as session:
            owners = session.execute(select(Study.accession_issuer, Report.sections)
                                     .join(Report, Report.study_id == Study.id)).all()
        assert [(issuer, sections["findings"]) for issuer, sections in owners] == [("HOSP-B", "Liver: normal.")]
        page.reload()
        page.get_by_label("Findings").wait_for()
        assert page.get_by_label("Findings").input_value() == "Liver: normal."

        # the session ends with text not saved; the next person at this browser never sees it
        add_person(config, tmp_path, "dr.next", "radiologist")
        _type_into_an_ended_session(page, config, tmp_path, "dr.issuer", "another long password",
                                    " Spleen: not saved.")
        kept = page.evaluate("() => Object.keys(sessionStorage).filter((k) => k.startsWith('radservice.unsaved.'))")
        assert kept == ["radservice.unsaved.dr.issuer|HOSP-B|TWO-1"]
        page.get_by_label("Username").fill("dr.next")
        page.get_by_label("Password").fill(PASSWORD)
        page.get_by_role("button", name="Sign in").click()
        page.get_by_label("Findings").wait_for()
        page.get_by_text("draft, version").wait_for()
        assert page.get_by_label("Findings").input_value() == "Liver: normal."
        assert page.get_by_text("Text you had not saved is back").count() == 0
        assert page.evaluate("() => Object.keys(sessionStorage).filter((k) => k.startsWith('radservice.'))") == []

        page.goto(running.base_url + "/#/study/TWO-1")
        page.get_by_text("exists for several issuers").wait_for()
        engine.dispose()


def test_a_word_to_check_is_selected_by_a_click_or_alt_n_and_its_audio_is_played(tmp_path: Path) -> None:
    """A low-confidence word: a click in it (or Alt+N) selects the whole word for typing over;
    Alt+L plays the dictated audio of the word at the cursor, Alt+Shift+L its sentence, from the
    dictation's own word times; every play is audited; a typed word has no audio and says so."""
    import numpy as np

    from radservice.audit.models import AuditEvent
    from radservice.db.session import make_engine, make_sessionmaker, session_scope
    from radservice.dictation.models import Dictation
    from radservice.worklist.models import Study
    from tests.audio_samples import wav_bytes
    from tests.support import add_report, add_study, wait_for

    config = write_config(tmp_path, port=free_port(), extra="[llm]\nenabled = false\n")
    dictation_id = "00000000-0000-4000-8000-0000000000b1"
    (tmp_path / "data" / "audio").mkdir(parents=True)
    t = np.arange(16000) / 16000
    # 1 s of silence, then a tone for the unsure word and silence after it
    (tmp_path / "data" / "audio" / f"{dictation_id}.wav").write_bytes(
        wav_bytes(np.concatenate([np.zeros(16000), 0.3 * np.sin(2 * np.pi * 440 * t), np.zeros(16000)])))
    with serve(config, tmp_path) as running, chromium(["--autoplay-policy=no-user-gesture-required"]) as browser:
        engine = make_engine(f"sqlite:///{tmp_path}/rs.db")
        sessions = make_sessionmaker(engine)
        add_study(sessions, "PB-1", procedure="CT ABDOMEN")
        add_report(sessions, "PB-1", {"findings": "Liver normal. Small pericholecystic fluid. Typed here.",
                                      "impression": "No acute finding."})
        with session_scope(sessions) as session:
            study = session.query(Study).filter_by(accession_number="PB-1").one()
            session.add(Dictation(
                id=dictation_id, study_id=study.id, section="findings", status="transcribed",
                audio_path=f"audio/{dictation_id}.wav", audio_format="wav", audio_bytes=96044, duration_s=3.0,
                transcript="liver normal small pericholecystic fluid",
                words=[{"word": " liver", "start": 0.1, "end": 0.4, "probability": 0.97},
                       {"word": " normal.", "start": 0.4, "end": 0.8, "probability": 0.95},
                       {"word": " small", "start": 0.9, "end": 1.1, "probability": 0.9},
                       {"word": " pericholecystic", "start": 1.1, "end": 1.7, "probability": 0.31},
                       {"word": " fluid.", "start": 1.7, "end": 2.2, "probability": 0.42}]))
        add_person(config, tmp_path, "dr.listen", "radiologist")
        page = browser.new_context().new_page()
        _sign_in(page, running.base_url, "dr.listen")
        page.goto(f"{running.base_url}/#/study/PB-1")
        findings = page.get_by_label("Findings")
        findings.wait_for()
        page.locator("[data-unsure=findings]").wait_for()
        selected = "() => { const a = document.activeElement; return a.value.slice(a.selectionStart, a.selectionEnd); }"
        # a click inside the highlighted word selects all of it
        findings.scroll_into_view_if_needed()
        mark = page.locator(".field .backdrop mark").first.bounding_box()
        assert mark is not None
        page.mouse.click(mark["x"] + mark["width"] * 0.6, mark["y"] + mark["height"] / 2)
        assert page.evaluate(selected) == "pericholecystic"
        # Alt+N: the next one, then around to the first
        page.keyboard.press("Alt+N")
        assert page.evaluate(selected) == "fluid"
        page.keyboard.press("Alt+N")
        assert page.evaluate(selected) == "pericholecystic"
        # Alt+L plays the selected word: its stretch of the recording, a little before and after
        with page.expect_response(re.compile(r"/api/v1/dictations/.*/audio\?")) as answer:
            page.keyboard.press("Alt+L")
        word = answer.value
        assert word.status == 200 and "start=0.95&end=1.85" in word.url, word.url
        assert word.headers["content-length"] == str(44 + 2 * int(0.9 * 16000))
        page.get_by_text("Playing “pericholecystic” (0.9 s)").wait_for(timeout=5000)  # it did play
        page.wait_for_function("() => !document.querySelector('.message.error')")
        # Alt+Shift+L: the whole sentence the cursor is in
        findings.evaluate("(a) => { const at = a.value.indexOf('Small') + 2; a.setSelectionRange(at, at); }")
        with page.expect_response(re.compile(r"/api/v1/dictations/.*/audio\?")) as answer:
            page.keyboard.press("Alt+Shift+L")
        assert "start=0.75&end=2.35" in answer.value.url, answer.value.url
        # a typed word was never dictated: nothing is asked for, the page says why
        findings.evaluate("(a) => { const at = a.value.indexOf('Typed') + 1; a.setSelectionRange(at, at); }")
        page.keyboard.press("Alt+L")
        page.get_by_text("No dictated audio here").wait_for()
        # the list's Play button does the same as Alt+L
        with page.expect_response(re.compile(r"/api/v1/dictations/.*/audio\?")) as answer:
            page.locator("[data-unsure=findings]").get_by_role("button", name="Play “fluid”").click()
        assert "start=1.55&end=2.35" in answer.value.url
        page.screenshot(path=str(tmp_path / "word-playback.png"))
        def played() -> list[tuple[str, str | None, float, float]]:
            with session_scope(sessions) as session:
                return [(e.actor, e.entity_id, e.detail["start"], e.detail["end"]) for e in session.query(AuditEvent)
                        .filter_by(action="dictation.audio.read").order_by(AuditEvent.id)]

        wait_for(lambda: len(played()) >= 3, "the plays' audit rows (written in batches)")
        assert played() == [
            ("dr.listen", dictation_id, 0.95, 1.85), ("dr.listen", dictation_id, 0.75, 2.35),
            ("dr.listen", dictation_id, 1.55, 2.35)]
        engine.dispose()
