"""The RIS side in tests: python-hl7's MLLP client (an independent implementation) and ACK reading."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path

import hl7
from hl7.client import MLLPClient

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "hl7"
MANIFEST = tomllib.loads((FIXTURES / "expected.toml").read_text())


@dataclass
class Ack:
    code: str
    control_id: str
    error_code: str
    raw: str


def read_ack(data: bytes) -> Ack:
    """MSA-1, MSA-2 and the table 0357 code from ERR (v2.5 ERR-3 or v2.3 ERR-1.4)."""
    text = data.strip(b"\x0b\x1c\r").decode("latin-1")
    message = hl7.parse(text.replace("\r\n", "\r"))
    msa = message.segment("MSA")
    error_code = ""
    try:
        err = message.segment("ERR")
    except KeyError:
        err = None
    if err is not None:
        error_code = str(err.extract_field(field_num=3, component_num=1)) or str(
            err.extract_field(field_num=1, component_num=4, subcomponent_num=1))
    return Ack(code=str(msa[1]), control_id=str(msa[2]), error_code=error_code, raw=text)


class RisClient:
    """One persistent MLLP connection, as a RIS keeps it."""

    def __init__(self, port: int, timeout: float = 15.0) -> None:
        self.client = MLLPClient("127.0.0.1", port)
        self.client.socket.settimeout(timeout)

    def send(self, payload: bytes) -> bytes:
        return bytes(self.client.send_message(payload))

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> RisClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def segment(name: str, fields: dict[int, str]) -> str:
    """A segment from numbered fields, so tests never miscount pipes."""
    values = [""] * (max(fields) + 1)
    values[0] = name
    for number, value in fields.items():
        values[number] = value
    return "|".join(values)


def order(control_id: str, accession: str, *, control: str = "NW", priority: str = "R",
          modality: str = "CT", patient_id: str = "MRN-T-1", family: str = "SYNTH",
          procedure: str = "TEST PROCEDURE") -> bytes:
    """A small valid ORM^O01 v2.3.1 built for a test."""
    segments = [
        f"MSH|^~\\&|TESTRIS|TESTHOSP|RADSERVICE|RAD|20261124140000||ORM^O01|{control_id}|P|2.3.1",
        f"PID|1||{patient_id}^^^TESTHOSP^MR||{family}^TEST||19700101|F",
        segment("ORC", {1: control, 2: f"P-{accession}", 3: f"F-{accession}", 5: "SC", 7: f"^^^^^{priority}",
                        9: "20261124135900"}),
        segment("OBR", {1: "1", 2: f"P-{accession}", 3: f"F-{accession}", 4: f"PROC^{procedure}",
                        7: "20261124135900", 18: accession, 19: f"RP-{accession}", 20: f"SPS-{accession}",
                        24: modality}),
    ]
    return ("\r".join(segments) + "\r").encode("ascii")
