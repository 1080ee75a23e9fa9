"""From an uploaded dictation to a report draft through `radservice serve`: the bundled model, the
rules, the report routes (read, edit, refusals)."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest

from tests.hl7_peer import RisClient, order, read_ack
from tests.integration.test_dictation_transcription import wait_job
from tests.support import free_port, radservice, serve, write_config
from tests.transcripts import AUDIO_FIXTURES, manifest

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]


def test_uploaded_dictation_becomes_a_refined_report_draft(tmp_path: Path) -> None:
    hl7_port = free_port()
    config = write_config(tmp_path, port=free_port(), hl7_port=hl7_port, workers=1,
                          worker_extra="poll_interval_s = 0.1",
                          extra=f'[whisper]\nvocabulary_dir = "{REPO}/config/vocabulary"\n'
                                f'[report]\ntemplates_dir = "{REPO}/config/templates"\n'
                                f'macros_file = "{REPO}/config/macros.toml"\n'
                                # no LLM answers there: the report says it is rules-only, and why
                                f'[llm]\nurl = "http://127.0.0.1:{free_port()}"\n')
    (item,) = [i for i in manifest() if i["id"] == "ct_chest_nodule"]
    with serve(config, tmp_path) as running:
        token = radservice("user", "add", "dr.rep", "--role", "radiologist", "--config", str(config)).stdout.split()[-1]
        admin = radservice("user", "add", "it.rep", "--role", "admin", "--config", str(config)).stdout.split()[-1]
        with RisClient(hl7_port) as ris:
            assert read_ack(ris.send(order("REP-API", "REP-API", modality="CT",
                                           procedure=item["procedure"].upper()))).code == "AA"
        client = httpx.Client(base_url=running.base_url, headers={"Authorization": f"Bearer {token}"}, timeout=30)
        path = AUDIO_FIXTURES / f"{item['id']}.{item['format']}"
        upload = client.post("/api/v1/studies/REP-API/dictations", files={"audio": (path.name, path.read_bytes())},
                             data={"section": "findings"})
        assert upload.status_code == 202, upload.text
        job = wait_job(client, upload.json()["job_id"])
        assert job["status"] == "done", job
        assert isinstance(job["result"], dict)
        draft = wait_job(client, job["result"]["draft_job_id"])
        assert draft["status"] == "done", draft

        study = client.get("/api/v1/studies/REP-API").json()
        assert study["status"] == "dictated" and study["report_id"] is not None
        report = client.get(f"/api/v1/reports/{study['report_id']}").json()
        assert report["status"] == "draft" and report["template"] == "CT chest"
        assert list(report["sections"]) == ["clinical_history", "technique", "comparison", "findings", "impression"]
        findings, impression = report["sections"]["findings"], report["sections"]["impression"]
        # digits and units, spoken punctuation written, the impression in its own section
        assert re.search(r"\b4 mm\b", findings), findings
        assert "right upper lobe" in findings and "period" not in findings.lower()
        assert findings[0].isupper() and findings.endswith(".")
        assert impression.startswith("4 mm right upper lobe") and "impression" not in findings.lower(), impression
        rules = {n["rule"] for n in report["refinement_notes"]}
        # (base writes "4 mm" itself where tiny.en wrote "four millimeter": no number rule needed then)
        assert {"spoken punctuation", "section"} <= rules
        assert report["refinement"].startswith("rules-only: clean impression: Ollama unreachable")
        assert "llm unavailable" in rules

        edited = client.patch(f"/api/v1/reports/{report['report_id']}",
                              json={"sections": {"technique": "Axial CT with contrast."},
                                    "revision": report["revision"]})
        assert edited.status_code == 200, edited.text
        assert edited.json()["sections"]["technique"] == "Axial CT with contrast."
        assert edited.json()["sections"]["findings"] == findings
        stale = client.patch(f"/api/v1/reports/{report['report_id']}",
                             json={"sections": {"technique": "x"}, "revision": report["revision"]})
        assert stale.status_code == 409 and "revision" in stale.json()["detail"]
        now = edited.json()["revision"]
        unknown = client.patch(f"/api/v1/reports/{report['report_id']}", json={"sections": {"lungs": "x"},
                                                                               "revision": now})
        assert unknown.status_code == 422 and "unknown section" in unknown.json()["detail"]
        empty = client.patch(f"/api/v1/reports/{report['report_id']}", json={"sections": {}, "revision": now})
        assert empty.status_code == 422
        assert client.get("/api/v1/reports/999999").status_code == 404
        forbidden = httpx.patch(f"{running.base_url}/api/v1/reports/{report['report_id']}",
                                headers={"Authorization": f"Bearer {admin}"},
                                json={"sections": {"technique": "x"}, "revision": now}, timeout=30)
        assert forbidden.status_code == 403
        log = running.log()
    assert "Traceback" not in log
    assert item["spoken"][:40] not in log and findings[:30] not in log  # no report text in the log
