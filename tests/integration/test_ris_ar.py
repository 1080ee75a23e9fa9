"""AR from a RIS (issue 26): in original acknowledgment mode AR may mean "system down", so it is
tried again a capped number of times (ris.retry_on_ar, ris.ar_attempts), or refused at once."""

from __future__ import annotations

import pytest

from integrations.hl7.sender import RisSender
from radservice.config import RisSettings
from tests.ris_peer import RisPeer
from tests.support import free_port
from tests.unit.test_hl7_oru import _report

pytestmark = pytest.mark.integration


@pytest.mark.parametrize(("retry_on_ar", "attempt", "outcome"), [
    (True, 1, "later"), (True, 4, "later"), (True, 5, "refused"), (False, 1, "refused"),
])
def test_ar_is_retried_a_capped_number_of_times(retry_on_ar: bool, attempt: int, outcome: str) -> None:
    port = free_port()
    settings = RisSettings(host="127.0.0.1", port=port, ack_timeout_s=5, connect_timeout_s=2,
                           retry_on_ar=retry_on_ar, ar_attempts=5)
    with RisPeer(port, answer="AR"):
        sender = RisSender(settings, sending_application="RADSERVICE", sending_facility="RADIOLOGY")
        try:
            result = sender.send(_report(attempts=attempt))
        finally:
            sender.close()
    assert result.outcome == outcome, result.detail
    assert result.detail.startswith("AR")


def test_ae_is_refused_at_once_whatever_retry_on_ar_says() -> None:
    port = free_port()
    with RisPeer(port, answer="AE"):
        sender = RisSender(RisSettings(host="127.0.0.1", port=port, ack_timeout_s=5, connect_timeout_s=2),
                           sending_application="RADSERVICE", sending_facility="RADIOLOGY")
        try:
            result = sender.send(_report(attempts=1))
        finally:
            sender.close()
    assert result.outcome == "refused" and result.code == "AE"
