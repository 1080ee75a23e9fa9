"""Order and patient mapping from parsed messages to domain data (no database, no socket)."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from integrations.hl7.inbound import FieldRef, check_header, merge_from, orders_from, parse_dtm, patient_from
from integrations.hl7.message import Message, MessageError, decode, parse
from radservice.worklist.intake import OrderControl, Priority
from tests.hl7_peer import FIXTURES, segment

OBR18 = FieldRef.parse("OBR-18")


def fixture(name: str) -> Message:
    text, codec = decode((FIXTURES / name).read_bytes())
    return parse(text, codec)


def test_epic_style_orm_with_zds_maps_every_field() -> None:
    [order] = orders_from(fixture("valid/01_v231_orm_nw_ct_zds.hl7"), OBR18)
    assert order.control is OrderControl.NEW
    assert (order.accession_number, order.accession_issuer) == ("ACC1001", "")
    assert (order.placer_order_number, order.filler_order_number) == ("PLC1001", "FIL1001")
    assert (order.requested_procedure_id, order.scheduled_step_id) == ("RP1001", "SPS1001")
    assert order.study_instance_uid == "1.2.826.0.1.3680043.10.1234.1001"
    assert (order.procedure_code, order.procedure_text) == ("CT.CHEST.WO", "CT Chest without contrast")
    assert order.modality == "CT"
    assert order.priority is Priority.ROUTINE
    assert order.reason == "Chest pain, unspecified"
    assert order.ordering_physician == "HOUSE, GREGORY"
    assert order.patient.patient_id == "MRN100001" and order.patient.issuer == "GENHOSP"
    assert order.patient.birth_date == date(1965, 3, 14)
    assert order.patient.sex == "M"


def test_omi_reads_the_ipc_segment() -> None:
    [order] = orders_from(fixture("valid/06_v251_omi_o23_ipc_stat.hl7"), OBR18)
    assert (order.accession_number, order.accession_issuer) == ("ACC1006", "CITYHOSP")
    assert (order.requested_procedure_id, order.scheduled_step_id) == ("RP1006", "SPS1006")
    assert order.study_instance_uid == "1.2.826.0.1.3680043.10.1234.1006"
    assert order.modality == "CT"
    assert order.priority is Priority.STAT
    assert order.ordered_at == datetime(2026, 11, 24, 10, 59, tzinfo=UTC)


def test_site_can_name_another_accession_field() -> None:
    [order] = orders_from(fixture("valid/01_v231_orm_nw_ct_zds.hl7"), FieldRef.parse("OBR-20"))
    assert order.accession_number == "SPS1001"


def test_filler_order_number_is_the_fallback_accession() -> None:
    [order] = orders_from(fixture("valid/12_v231_orm_nw_filler_as_accession.hl7"), OBR18)
    assert (order.accession_number, order.accession_issuer) == ("FL-2001", "SMALLRIS")


def test_mr_identifier_is_chosen_among_repetitions() -> None:
    [order] = orders_from(fixture("valid/03_v24_orm_nw_us_asap_apostrophe.hl7"), OBR18)
    assert order.patient.patient_id == "MRN300003"
    assert order.priority is Priority.ASAP


def test_two_orders_in_one_message_are_two_studies() -> None:
    text = "\r".join([
        "MSH|^~\\&|RIS|H|RS|R|20261124||ORM^O01|TWO|P|2.3.1",
        "PID|1||MRN1^^^H^MR||TWO^ORDERS||19700101|F",
        segment("ORC", {1: "NW", 2: "P1", 3: "F1"}), segment("OBR", {1: "1", 4: "A^A", 18: "ACC-A", 24: "CT"}),
        segment("ORC", {1: "NW", 2: "P2", 3: "F2"}), segment("OBR", {1: "2", 4: "B^B", 18: "ACC-B", 24: "US"}),
    ])
    orders = orders_from(parse(text), OBR18)
    assert [(o.accession_number, o.modality) for o in orders] == [("ACC-A", "CT"), ("ACC-B", "US")]


def test_merge_reads_mrg() -> None:
    merge = merge_from(fixture("valid/11_v251_adt_a40_merge.hl7"))
    assert (merge.survivor.patient_id, merge.prior_patient_id, merge.prior_issuer) == (
        "MRN400004", "MRN499999", "UNIKLINIK")


@pytest.mark.parametrize(
    ("value", "expected"),
    [("20261124103000+0100", datetime(2026, 11, 24, 9, 30, tzinfo=UTC)),
     ("202611241030-0500", datetime(2026, 11, 24, 15, 30, tzinfo=UTC)),
     ("20261124103000.1234+0000", datetime(2026, 11, 24, 10, 30, tzinfo=UTC))],
)
def test_hl7_timestamps(value: str, expected: datetime) -> None:
    assert parse_dtm(value, ("ORC", 9)) == expected


def test_bad_timestamp_is_ae() -> None:
    with pytest.raises(MessageError) as info:
        parse_dtm("2026-11-24", ("ORC", 9))
    assert (info.value.ack_code, info.value.location) == ("AE", ("ORC", 9))


@pytest.mark.parametrize(
    ("msh9", "version", "code"),
    [("ORU^R01", "2.3.1", 200), ("ORM^O02", "2.4", 201), ("ORM^O01", "2.6", 203), ("ORM^O01", "2.2", 203)],
)
def test_unsupported_types_and_versions_are_ar(msh9: str, version: str, code: int) -> None:
    with pytest.raises(MessageError) as info:
        check_header(parse(f"MSH|^~\\&|A|B|C|D|20261124||{msh9}|X|P|{version}"))
    assert (info.value.ack_code, info.value.error_code) == ("AR", code)


def test_missing_pid_is_ae() -> None:
    with pytest.raises(MessageError) as info:
        patient_from(None)
    assert info.value.ack_code == "AE"


def test_field_ref_parsing() -> None:
    assert str(FieldRef.parse("ipc-1")) == "IPC-1"
    with pytest.raises(ValueError):
        FieldRef.parse("OBR18")
