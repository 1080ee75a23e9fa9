"""C-STORE of our SR to a real Orthanc: a reused association with TCP_NODELAY (what the outbox
does), the same without TCP_NODELAY, and a new association for every store.

    .venv/bin/python bench/pacs_store.py [--stores 100]

Prints the median and p95 time per C-STORE of each way, and the ratios to the first.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from integrations.dicom import scu  # noqa: E402
from integrations.dicom.sr import build_sr  # noqa: E402
from radservice.config import DicomSettings, PacsSettings  # noqa: E402
from tests.pacs_peer import orthanc  # noqa: E402
from tests.unit.test_hl7_oru import _report  # noqa: E402


def _measure(client: scu.PacsClient, stores: int, *, fresh: bool) -> list[float]:
    times = []
    for n in range(stores):
        ds = build_sr(replace(_report(), sr_instance_uid=f"2.25.{time.time_ns()}{n}"), study_instance_uid="1.2.3.4")
        started = time.perf_counter()
        status = client.store(ds)
        times.append((time.perf_counter() - started) * 1000)
        assert status == 0, hex(status)
        if fresh:
            client.close()
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stores", type=int, default=100)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, orthanc(Path(tmp)) as pacs:
        settings = PacsSettings(host="127.0.0.1", port=pacs.dicom_port, idle_timeout_s=600)
        results: dict[str, list[float]] = {}
        client = scu.PacsClient(settings, DicomSettings())
        _measure(client, 5, fresh=False)  # warm-up
        results["reused association, TCP_NODELAY"] = _measure(client, args.stores, fresh=False)
        client.close()
        original = scu.set_nodelay
        scu.set_nodelay = lambda assoc: None  # type: ignore[assignment]
        try:
            client = scu.PacsClient(settings, DicomSettings())
            results["reused association, Nagle on"] = _measure(client, args.stores, fresh=False)
            client.close()
        finally:
            scu.set_nodelay = original
        client = scu.PacsClient(settings, DicomSettings())
        results["new association per store, TCP_NODELAY"] = _measure(client, args.stores, fresh=True)
        base = statistics.median(results["reused association, TCP_NODELAY"])
        print(f"Orthanc {pacs.get('/system')['Version']}, {args.stores} C-STOREs of one Basic Text SR each way")
        for name, values in results.items():
            median = statistics.median(values)
            p95 = sorted(values)[round(0.95 * len(values)) - 1]
            print(f"  {name:40} median {median:6.1f} ms   p95 {p95:6.1f} ms   ratio {median / base:5.2f}")


if __name__ == "__main__":
    main()
