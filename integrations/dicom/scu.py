"""DICOM services we call on the PACS (pynetdicom): C-STORE of our SRs on a reused association,
C-FIND of a study by accession number, C-ECHO; and the outbox's sender for destination ``pacs``.

Every call has a timeout (connection, ACSE, DIMSE, network); TCP_NODELAY is set on our
association sockets (measured here: 92 ms per store with Nagle, 6-7.5 ms without). Status
meanings are a table of data, as pynetdicom keeps them.
"""

from __future__ import annotations

import logging
import socket
import ssl
import threading
import uuid
from dataclasses import dataclass

from pydicom.dataset import Dataset
from pynetdicom import AE
from pynetdicom.association import Association
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    BasicTextSRStorage,
    StudyRootQueryRetrieveInformationModelFind,
    Verification,
)

from integrations.dicom.sr import SrError, build_sr
from radservice import tls
from radservice.config import DicomSettings, PacsSettings
from radservice.outbox.flows import SendResult
from radservice.outbox.service import OutgoingReport

log = logging.getLogger("radservice.dicom")

#: Namespace of the Study Instance UIDs we must make up (no UID in the order, none in the PACS).
_STUDY_NAMESPACE = uuid.UUID("0b6f5d0e-8a3e-4f65-b7a4-58cbbd0f1f42")

#: C-STORE statuses (PS3.4 GG.4-1 and B.2-1): what each means for the outbox.
STORE_STATUS = {
    0x0000: ("acked", "success"),
    0xB000: ("acked", "warning: coercion of data elements"),
    0xB006: ("acked", "warning: elements discarded"),
    0xB007: ("acked", "warning: data set does not match SOP class"),
    0x0117: ("refused", "invalid SOP instance"),
    0x0122: ("refused", "SOP class not supported"),
    0x0124: ("refused", "not authorized"),
    0x0210: ("later", "duplicate invocation"),
    0x0211: ("refused", "unrecognized operation"),
    0x0212: ("refused", "mistyped argument"),
    0x0213: ("later", "resource limitation"),
}


def store_outcome(status: int) -> tuple[str, str]:
    """(outcome, meaning) of a C-STORE status: ``acked``, ``refused`` or ``later``."""
    if status in STORE_STATUS:
        return STORE_STATUS[status]
    if 0xA700 <= status <= 0xA7FF:
        return "later", "refused: out of resources"
    if 0xA900 <= status <= 0xA9FF:
        return "refused", "error: data set does not match SOP class"
    if 0xC000 <= status <= 0xCFFF:
        return "refused", "error: cannot understand"
    if 0xB000 <= status <= 0xBFFF:
        return "acked", "warning"
    return "refused", "failure"


class PacsUnavailable(Exception):
    """No association (refused, rejected, timed out), it broke during the operation, or the PACS
    answered a query with a failure status: worth trying again later."""


class PacsRefusesService(Exception):
    """The PACS accepted the association but not the presentation context this needs (it does
    not take Basic Text SR, or does not answer Study Root C-FIND): trying again changes nothing."""


@dataclass(frozen=True)
class FoundStudy:
    """One study a C-FIND answered: its UID and the patient the PACS files it under."""

    uid: str
    patient_id: str
    issuer: str


#: What each service is called in an error a person reads.
_SERVICE_NAMES = {BasicTextSRStorage: "Basic Text SR storage",
                  StudyRootQueryRetrieveInformationModelFind: "Study Root C-FIND", Verification: "C-ECHO"}


def _accepts(assoc: Association, sop_class: str) -> None:
    """PacsRefusesService unless the association has an accepted context for the SOP class."""
    if not any(cx.abstract_syntax == sop_class for cx in assoc.accepted_contexts):
        name = _SERVICE_NAMES.get(sop_class, sop_class)
        raise PacsRefusesService(f"PACS does not accept {name} (presentation context rejected)")


def set_nodelay(assoc: Association) -> None:
    """TCP_NODELAY on an association's socket (pynetdicom never sets it; each small PDU would
    wait for the peer's delayed ACK)."""
    sock = getattr(getattr(assoc.dul, "socket", None), "socket", None)
    if isinstance(sock, socket.socket):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class PacsClient:
    """Our AE towards one PACS: an association opened on first use and reused while it lasts.

    Parameters
    ----------
    pacs, dicom
        ``[pacs]`` (host, port, called AE title, timeouts) and ``[dicom]`` (our AE title).
    """

    def __init__(self, pacs: PacsSettings, dicom: DicomSettings, *, ssl_context: ssl.SSLContext | None = None) -> None:
        self.pacs = pacs
        # DICOM TLS (BCP 195): the PACS's certificate is checked against the context's CAs and host
        self.tls_args = (ssl_context, pacs.host) if ssl_context is not None else None
        ae = AE(ae_title=dicom.ae_title)
        for context in (BasicTextSRStorage, StudyRootQueryRetrieveInformationModelFind, Verification):
            ae.add_requested_context(context)
        ae.connection_timeout = pacs.connect_timeout_s
        ae.acse_timeout = pacs.timeout_s
        ae.dimse_timeout = pacs.timeout_s
        ae.network_timeout = pacs.idle_timeout_s
        self.ae = ae
        self._assoc: Association | None = None
        self._lock = threading.Lock()

    def _association(self) -> Association:
        if self._assoc is not None and self._assoc.is_established:
            return self._assoc
        assoc = self.ae.associate(self.pacs.host, self.pacs.port, ae_title=self.pacs.ae_title, tls_args=self.tls_args)
        if not assoc.is_established:
            where = f"{self.pacs.ae_title}@{self.pacs.host}:{self.pacs.port}"
            if assoc.is_rejected:
                raise PacsUnavailable(f"association rejected by {where}")
            why = self._tls_failure() if self.tls_args is not None else ""
            raise PacsUnavailable(f"no association with {where} ({why or 'connection refused, timed out or aborted'})")
        set_nodelay(assoc)
        self._assoc = assoc
        return assoc

    def _tls_failure(self) -> str:
        """Why a TLS association failed, found by shaking hands once more ourselves (pynetdicom
        only logs it): an untrusted or misnamed certificate, or the PACS refusing ours."""
        assert self.tls_args is not None
        try:
            found = tls.probe(self.pacs.host, self.pacs.port, self.tls_args[0], peer="PACS", hint="see pacs.tls_cert",
                              timeout_s=self.pacs.connect_timeout_s)
        except OSError:
            return ""
        return f"TLS: {found.problem}" if found.problem else ""

    def close(self) -> None:
        with self._lock:
            if self._assoc is not None and self._assoc.is_established:
                self._assoc.release()
            self._assoc = None

    def store(self, ds: Dataset) -> int:
        """C-STORE one dataset; the status, or PacsUnavailable when no answer came."""
        with self._lock:
            for attempt in (1, 2):
                reused = self._assoc is not None and self._assoc.is_established
                assoc = self._association()
                _accepts(assoc, ds.SOPClassUID)
                status = assoc.send_c_store(ds)
                if "Status" in status:
                    return int(status.Status)
                self._assoc = None
                if not (reused and attempt == 1):  # a kept association the PACS dropped: once more
                    break
            raise PacsUnavailable(f"no C-STORE response from {self.pacs.host}:{self.pacs.port} "
                                  f"within {self.pacs.timeout_s:g} s (association lost)")

    def find_studies(self, accession_number: str) -> list[FoundStudy]:
        """The studies with this accession number (Study Root, STUDY level), with their patient.

        Raises
        ------
        PacsUnavailable
            No answer, or a failure or cancel status: the search did not happen, which is not
            "no such study".
        PacsRefusesService
            The PACS does not answer Study Root C-FIND at all.
        """
        query = Dataset()
        query.QueryRetrieveLevel = "STUDY"
        query.AccessionNumber = accession_number
        query.StudyInstanceUID = ""
        query.PatientID = ""
        query.IssuerOfPatientID = ""
        found: dict[str, FoundStudy] = {}
        with self._lock:
            assoc = self._association()
            _accepts(assoc, StudyRootQueryRetrieveInformationModelFind)
            for status, identifier in assoc.send_c_find(query, StudyRootQueryRetrieveInformationModelFind):
                if "Status" not in status:
                    self._assoc = None
                    raise PacsUnavailable(f"no C-FIND response from {self.pacs.host}:{self.pacs.port}")
                code = int(status.Status)
                if code in (0xFF00, 0xFF01):
                    if identifier is None:
                        continue
                    uid = str(identifier.get("StudyInstanceUID", ""))
                    if uid and uid not in found:
                        found[uid] = FoundStudy(uid, str(identifier.get("PatientID", "") or ""),
                                                str(identifier.get("IssuerOfPatientID", "") or ""))
                elif code != 0x0000:  # failure (A700, A900, Cxxx) or cancel (FE00)
                    raise PacsUnavailable(f"C-FIND failed with status 0x{code:04X}: study not searched")
        return list(found.values())

    def echo(self) -> int:
        """C-ECHO; the status."""
        with self._lock:
            assoc = self._association()
            _accepts(assoc, Verification)
            status = assoc.send_c_echo()
            if "Status" not in status:
                self._assoc = None
                raise PacsUnavailable(f"no C-ECHO response from {self.pacs.host}:{self.pacs.port}")
            return int(status.Status)


class StudyMismatch(Exception):
    """The PACS's answer does not identify one study of this patient."""


@dataclass(frozen=True)
class StudyUid:
    """Where the Study Instance UID of an SR came from: ``order``, ``c-find`` or ``made``."""

    uid: str
    source: str


def made_study_uid(accession_number: str, issuer: str) -> str:
    """A Study Instance UID for a study nobody named: the same for the same accession every time."""
    return f"2.25.{uuid.uuid5(_STUDY_NAMESPACE, f'{issuer}/{accession_number}').int}"


class PacsSender:
    """The outbox's sender for destination ``pacs``: our SR, C-STORE on a reused association.

    Success (and warning) statuses -> acked; failure statuses -> refused, except resource
    shortages; a refused, rejected or broken association or no answer in time -> later.
    The Study Instance UID is the order's, else the PACS's (C-FIND by accession), else one
    made from the accession number (said on the delivery).
    """

    destination = "pacs"

    def __init__(self, pacs: PacsSettings, dicom: DicomSettings, *, institution: str = "",
                 ssl_context: ssl.SSLContext | None = None) -> None:
        self.client = PacsClient(pacs, dicom, ssl_context=ssl_context) if pacs.host else None
        self.institution = institution
        self.patient_issuer = pacs.patient_issuer
        self.longest_send_s = pacs.longest_send_s

    def study_uid(self, report: OutgoingReport) -> StudyUid:
        """The order's Study Instance UID, else the one study the PACS has for this accession and
        patient, else one made from the accession.

        Raises
        ------
        StudyMismatch
            The PACS has several studies for the accession, or only studies of another patient:
            filing the report under one of them could put it in the wrong patient's record.
        """
        if report.study_instance_uid:
            return StudyUid(report.study_instance_uid, "order")
        assert self.client is not None
        found = self.client.find_studies(report.accession_number)
        # A PACS that returns no Patient ID (or no issuer) cannot contradict ours. On a PACS shared
        # by several facilities, the same ID under another issuer is another patient; a PACS
        # that names the RIS's issuer its own way is told by pacs.patient_issuer.
        issuers = {i for i in (report.patient_issuer, self.patient_issuer) if i}
        same_id = [s for s in found if not s.patient_id or s.patient_id == report.patient_id]
        ours = [s for s in same_id if not s.issuer or not issuers or s.issuer in issuers]
        if same_id and not ours:
            raise StudyMismatch("the PACS files the study under the same patient ID with another issuer; if that "
                                "is this hospital's issuer under the PACS's name, set pacs.patient_issuer")
        if len(ours) == 1:
            return StudyUid(ours[0].uid, "c-find")
        if len(ours) > 1:
            raise StudyMismatch(f"the PACS has {len(ours)} studies with this accession number for this patient; "
                                "name the study (Study Instance UID in the order) or merge them in the PACS")
        if found:
            raise StudyMismatch(f"the PACS has {len(found)} study(ies) with this accession number, filed under "
                                "another patient ID; reconcile the patient in the PACS or the RIS")
        return StudyUid(made_study_uid(report.accession_number, report.accession_issuer), "made")

    def send(self, report: OutgoingReport) -> SendResult:
        if self.client is None:
            return SendResult.later("pacs.host is not configured: set [pacs] host, port and ae_title")
        try:
            study = self.study_uid(report)
            ds = build_sr(report, study_instance_uid=study.uid, institution=self.institution)
            status = self.client.store(ds)
        except PacsUnavailable as exc:
            return SendResult.later(str(exc))
        except PacsRefusesService as exc:
            return SendResult.refused("", str(exc))
        except StudyMismatch as exc:
            return SendResult.refused("", f"study not identified: {exc}")
        except SrError as exc:
            return SendResult.refused("", f"cannot build the SR: {exc}")
        outcome, meaning = store_outcome(status)
        code = f"0x{status:04X}"
        notes = {"c-find": f"Study Instance UID {study.uid} found in the PACS by accession number",
                 "made": f"warning: no Study Instance UID in the order or the PACS; made {study.uid}"}
        note = "; ".join(n for n in (notes.get(study.source, ""), meaning if status else "") if n)
        if outcome == "acked":
            return SendResult.accepted(code, note, study.uid if study.source != "order" else None)
        if outcome == "later":
            return SendResult.later(f"C-STORE status {code}: {meaning}")
        return SendResult.refused(code, f"C-STORE status {code}: {meaning}")

    def close(self) -> None:
        if self.client is not None:
            self.client.close()
