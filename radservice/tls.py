"""TLS for every listener and peer (HTTPS, MLLP, DICOM), one policy: IETF BCP 195 (RFC 9325),
which DICOM PS3.15's BCP 195 profiles follow: TLS 1.2 or newer, forward-secret AEAD cipher
suites for TLS 1.2 (TLS 1.3's suites are all acceptable), no compression, no renegotiation.

Contexts are built from file paths in the settings; a file that cannot be used is a TlsError
naming the key and the file, never a traceback.
"""

from __future__ import annotations

import socket
import ssl
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from radservice.config import DicomSettings, Hl7Settings, PacsSettings, RisSettings, ServerSettings, Settings

#: TLS 1.2 suites BCP 195 recommends: ECDHE or DHE key exchange, AES-GCM or ChaCha20-Poly1305.
BCP195_TLS12_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20:DHE+AESGCM:DHE+CHACHA20"
#: A certificate this close to its end is reported by `radservice check` as a warning.
EXPIRY_WARNING_DAYS = 30


class TlsError(Exception):
    """A certificate, key or CA file cannot be used; the message names the setting and the file."""


def _harden(context: ssl.SSLContext) -> ssl.SSLContext:
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(BCP195_TLS12_CIPHERS)
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION
    return context


def _load_chain(context: ssl.SSLContext, cert: Path, key: Path, what: str) -> None:
    try:
        context.load_cert_chain(certfile=str(cert), keyfile=str(key))
    except FileNotFoundError as exc:
        raise TlsError(f"{what}: {exc.filename}: no such file") from None
    except (ssl.SSLError, OSError) as exc:
        raise TlsError(f"{what}: certificate {cert} and key {key} cannot be used together: "
                       f"{failure_reason(exc)}") from None


def _load_ca(context: ssl.SSLContext, ca: Path, what: str) -> None:
    try:
        context.load_verify_locations(cafile=str(ca))
    except FileNotFoundError:
        raise TlsError(f"{what}: {ca}: no such file") from None
    except (ssl.SSLError, OSError) as exc:
        raise TlsError(f"{what}: {ca} holds no usable CA certificate: {failure_reason(exc)}") \
            from None


def server_context(*, cert: Path, key: Path, client_ca: Path | None = None, what: str) -> ssl.SSLContext:
    """A listener's context; with ``client_ca``, clients must present a certificate it signed
    (IHE ATNA's mutual authentication between secure nodes)."""
    context = _harden(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER))
    _load_chain(context, cert, key, what)
    if client_ca is not None:
        _load_ca(context, client_ca, what)
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def client_context(*, ca: Path | None = None, cert: Path | None = None, key: Path | None = None,
                   what: str) -> ssl.SSLContext:
    """A client's context: the peer's certificate is verified (against ``ca``, else the system's
    CAs) with its host name; ``cert``/``key`` are our own certificate for a peer that asks."""
    context = _harden(ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT))
    if ca is not None:
        _load_ca(context, ca, what)
    else:
        context.load_default_certs(ssl.Purpose.SERVER_AUTH)
    if cert is not None and key is not None:
        _load_chain(context, cert, key, what)
    return context


def not_after(cert: Path) -> datetime:
    """When the first certificate of a PEM file (a chain or a CA bundle) to end ends.

    Raises
    ------
    TlsError
        The file cannot be read or holds no PEM certificate.
    """
    from cryptography import x509

    try:
        loaded = x509.load_pem_x509_certificates(cert.read_bytes())
    except OSError as exc:
        raise TlsError(f"{cert}: cannot read: {exc.strerror}") from None
    except ValueError:
        raise TlsError(f"{cert}: no PEM certificate") from None
    return min(one.not_valid_after_utc for one in loaded)


def days_until(moment: datetime, now: datetime | None = None) -> float:
    """Days until ``moment`` (a certificate's end; negative: it has passed)."""
    return (moment - (now or datetime.now(UTC))).total_seconds() / 86400


def failure_reason(exc: BaseException) -> str:
    """What an SSL or socket error says, in a few words (for a log line or a last_error)."""
    return str(getattr(exc, "verify_message", None) or getattr(exc, "reason", None)
               or getattr(exc, "strerror", None) or type(exc).__name__)


@dataclass(frozen=True)
class Probe:
    """What one TLS connection to a peer showed: the version agreed, or the problem."""

    version: str
    problem: str


def probe(host: str, port: int, context: ssl.SSLContext, *, peer: str, hint: str, timeout_s: float) -> Probe:
    """Connect, shake hands and listen a moment: TLS 1.3 tells a client that the server refused
    its certificate only after the client's handshake has ended (an alert or a close), and a
    silent second is a peer waiting for a message, i.e. content.

    Raises
    ------
    OSError
        No TCP connection at all.
    """
    raw = socket.create_connection((host, port), timeout=timeout_s)
    try:
        with context.wrap_socket(raw, server_hostname=host) as secured:
            version = secured.version() or ""
            secured.settimeout(1.0)
            try:
                if secured.recv(1) == b"":
                    return Probe(version, f"the {peer} closed the connection after the TLS handshake "
                                          f"(does the {peer} accept our certificate? {hint})")
            except TimeoutError:
                pass
            return Probe(version, "")
    except ssl.SSLCertVerificationError as exc:
        return Probe("", f"the {peer}'s certificate is not trusted: {exc.verify_message}")
    except ssl.SSLError as exc:
        return Probe("", f"TLS with the {peer} ended: {failure_reason(exc)} (does the {peer} accept our "
                         f"certificate? {hint})")
    finally:
        raw.close()


# --- one context per place TLS is switched on in the settings (None: plain TCP) ---

def https_context(server: ServerSettings) -> ssl.SSLContext | None:
    if server.tls_cert is None or server.tls_key is None:
        return None
    return server_context(cert=server.tls_cert, key=server.tls_key, what="server.tls_cert")


def mllp_context(hl7: Hl7Settings) -> ssl.SSLContext | None:
    if hl7.tls_cert is None or hl7.tls_key is None:
        return None
    return server_context(cert=hl7.tls_cert, key=hl7.tls_key, client_ca=hl7.tls_client_ca, what="hl7.tls_cert")


def dicom_context(dicom: DicomSettings) -> ssl.SSLContext | None:
    if dicom.tls_cert is None or dicom.tls_key is None:
        return None
    return server_context(cert=dicom.tls_cert, key=dicom.tls_key, client_ca=dicom.tls_client_ca,
                          what="dicom.tls_cert")


def ris_context(ris: RisSettings) -> ssl.SSLContext | None:
    if not ris.tls:
        return None
    return client_context(ca=ris.tls_ca, cert=ris.tls_cert, key=ris.tls_key, what="ris.tls")


def pacs_context(pacs: PacsSettings) -> ssl.SSLContext | None:
    if not pacs.tls:
        return None
    return client_context(ca=pacs.tls_ca, cert=pacs.tls_cert, key=pacs.tls_key, what="pacs.tls")


@dataclass(frozen=True)
class Contexts:
    """Every context the settings switch on (None: that wire is plain TCP)."""

    https: ssl.SSLContext | None
    mllp: ssl.SSLContext | None
    dicom: ssl.SSLContext | None
    ris: ssl.SSLContext | None
    pacs: ssl.SSLContext | None


def contexts(settings: Settings) -> Contexts:
    """Build them all at once, so a bad file stops the start, not a connection.

    Raises
    ------
    TlsError
        The first certificate, key or CA that cannot be used.
    """
    return Contexts(https=https_context(settings.server), mllp=mllp_context(settings.hl7),
                    dicom=dicom_context(settings.dicom), ris=ris_context(settings.ris),
                    pacs=pacs_context(settings.pacs))


def certificates(settings: Settings) -> dict[str, Path]:
    """Every certificate file the settings name, by key (for `radservice check`'s expiry report)."""
    named = {"server.tls_cert": settings.server.tls_cert, "hl7.tls_cert": settings.hl7.tls_cert,
             "hl7.tls_client_ca": settings.hl7.tls_client_ca, "dicom.tls_cert": settings.dicom.tls_cert,
             "dicom.tls_client_ca": settings.dicom.tls_client_ca,
             "ris.tls_ca": settings.ris.tls_ca if settings.ris.tls else None,
             "ris.tls_cert": settings.ris.tls_cert if settings.ris.tls else None,
             "pacs.tls_ca": settings.pacs.tls_ca if settings.pacs.tls else None,
             "pacs.tls_cert": settings.pacs.tls_cert if settings.pacs.tls else None}
    return {key: path for key, path in named.items() if path is not None}
