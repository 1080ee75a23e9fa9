"""TLS on every wire, switched on in config, with a certificate authority made in the test (trustme):
HTTPS for the API and page (HSTS, Secure cookie), MLLP over mutual TLS in and out, DICOM TLS on our
listener and to the PACS (Orthanc with DICOM TLS); untrusted certificates and plaintext clients are
refused without harm to the listener; `radservice check` reports certificates near their end."""

from __future__ import annotations

import socket
import ssl
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
import trustme
from pynetdicom import AE
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from integrations.hl7.mllp import FrameReader, wrap
from integrations.loopback import LoopbackRis
from radservice.db.session import make_engine, make_sessionmaker
from tests.browser import PASSWORD
from tests.hl7_peer import order, read_ack
from tests.pacs_peer import MISSING, orthanc
from tests.support import add_report, free_port, radservice, serve, sign_report, write_config

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(bool(MISSING), reason=f"{', '.join(MISSING)} not installed")]


@dataclass
class Pki:
    folder: Path
    ca: Path  # the hospital's CA
    cert: Path  # a server certificate for 127.0.0.1 / localhost (our listeners, the RIS, the PACS)
    key: Path
    client_cert: Path  # a secure node's client certificate, from the same CA
    client_key: Path
    rogue_cert: Path  # a certificate from a CA nobody trusts
    rogue_key: Path


def _write(leaf: trustme.LeafCert, folder: Path, name: str) -> tuple[Path, Path]:
    cert, key = folder / f"{name}.pem", folder / f"{name}.key"
    cert.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
    leaf.private_key_pem.write_to_path(str(key))
    return cert, key


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    folder = tmp_path_factory.mktemp("pki")
    ca, rogue = trustme.CA(), trustme.CA()
    ca.cert_pem.write_to_path(str(folder / "ca.pem"))
    cert, key = _write(ca.issue_cert("127.0.0.1", "localhost"), folder, "server")
    client_cert, client_key = _write(ca.issue_cert("ris.hospital.test", common_name="ris.hospital.test"), folder,
                                     "client")
    rogue_cert, rogue_key = _write(rogue.issue_cert("127.0.0.1", "localhost", common_name="rogue"), folder, "rogue")
    return Pki(folder, folder / "ca.pem", cert, key, client_cert, client_key, rogue_cert, rogue_key)


def _client(pki: Pki, *, cert: Path | None = None, key: Path | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(pki.ca))
    if cert is not None:
        context.load_cert_chain(str(cert), str(key))
    return context


@dataclass
class Secure:
    base: str
    mllp_port: int
    dicom_port: int
    config: Path
    workdir: Path
    ris: LoopbackRis
    pacs_instances: object
    log: object


@pytest.fixture(scope="module")
def secure(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Secure]:
    """serve with TLS everywhere: HTTPS, MLLP in (client certificates required), DICOM in (the
    same), ORU out to a RIS asking for our certificate, SR out to Orthanc over DICOM TLS."""
    workdir = tmp_path_factory.mktemp("secure")
    ris_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ris_context.load_cert_chain(str(pki.cert), str(pki.key))
    ris_context.load_verify_locations(str(pki.ca))
    ris_context.verify_mode = ssl.CERT_REQUIRED  # mutual TLS: the RIS wants our certificate
    mllp_port, dicom_port = free_port(), free_port()
    with LoopbackRis(ssl_context=ris_context) as ris, \
            orthanc(workdir / "orthanc", tls=(pki.cert, pki.key, pki.ca)) as pacs:
        config = write_config(
            workdir, port=free_port(), hl7_port=mllp_port,
            hl7_extra=f'tls_cert = "{pki.cert}"\ntls_key = "{pki.key}"\ntls_client_ca = "{pki.ca}"\n',
            extra=f'[dicom]\nlisten_host = "127.0.0.1"\nlisten_port = {dicom_port}\ntls_cert = "{pki.cert}"\n'
                  f'tls_key = "{pki.key}"\ntls_client_ca = "{pki.ca}"\n'
                  f'[ris]\nhost = "localhost"\nport = {ris.port}\nack_timeout_s = 5\ntls = true\n'
                  f'tls_ca = "{pki.ca}"\ntls_cert = "{pki.client_cert}"\ntls_key = "{pki.client_key}"\n'
                  f'[pacs]\nhost = "localhost"\nport = {pacs.dicom_port}\ntls = true\ntls_ca = "{pki.ca}"\n'
                  f'tls_cert = "{pki.client_cert}"\ntls_key = "{pki.client_key}"\n'
                  "[outbox]\npoll_interval_s = 0.2\nretry_initial_s = 0.5\nretry_max_s = 1\n[llm]\nenabled = false\n")
        text = config.read_text().replace("[server]\n", f'[server]\ntls_cert = "{pki.cert}"\ntls_key = "{pki.key}"\n')
        config.write_text(text)
        with serve(config, workdir, wait_s=60) as running:
            yield Secure(running.base_url, mllp_port, dicom_port, config, workdir, ris, pacs.instances, running.log)


def test_https_api_sends_hsts_and_a_secure_cookie_and_survives_a_plaintext_client(pki: Pki, secure: Secure) -> None:
    trusted = _client(pki)
    health = httpx.get(secure.base + "/healthz", verify=trusted, timeout=10)
    assert health.status_code == 200
    assert health.headers["strict-transport-security"] == "max-age=31536000"
    with pytest.raises(httpx.TransportError):  # plain HTTP on the HTTPS port: no answer
        httpx.get(secure.base.replace("https://", "http://") + "/healthz", timeout=5)
    old = ssl.create_default_context(cafile=str(pki.ca))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        old.maximum_version = ssl.TLSVersion.TLSv1_1
        old.minimum_version = ssl.TLSVersion.TLSv1
    with pytest.raises(httpx.TransportError):  # below BCP 195's TLS 1.2
        httpx.get(secure.base + "/healthz", verify=old, timeout=5)
    with pytest.raises(httpx.TransportError):  # a client that trusts only other CAs cannot be fooled into us
        httpx.get(secure.base + "/healthz", verify=_client(pki).__class__(ssl.PROTOCOL_TLS_CLIENT), timeout=5)
    added = radservice("user", "add", "dr.tls", "--role", "radiologist", "--password-stdin", "--config",
                       str(secure.config), cwd=secure.workdir, input_text=PASSWORD + "\n")
    assert added.returncode == 0, added.stderr
    signed_in = httpx.post(secure.base + "/api/v1/session", json={"username": "dr.tls", "password": PASSWORD},
                           headers={"Origin": secure.base}, verify=trusted, timeout=10)
    assert signed_in.status_code == 200, signed_in.text
    cookie = signed_in.headers["set-cookie"].lower()
    assert "secure" in cookie and "httponly" in cookie and "samesite=strict" in cookie
    # the container's HEALTHCHECK follows the scheme
    health_check = subprocess.run([sys.executable, "-m", "radservice.healthcheck"], capture_output=True, text=True,
                                  cwd=secure.workdir, timeout=30,
                                  env={"RADSERVICE_CONFIG": str(secure.config), "PATH": "/usr/bin:/bin",
                                       # a proxy in the environment is not asked about this machine
                                       "https_proxy": "http://127.0.0.1:9", "http_proxy": "http://127.0.0.1:9"})
    assert health_check.returncode == 0, health_check.stderr


def _mllp_send(port: int, payload: bytes, context: ssl.SSLContext | None) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        sock = context.wrap_socket(raw, server_hostname="127.0.0.1") if context else raw
        sock.sendall(wrap(payload))
        reader = FrameReader(1 << 20)
        while True:
            data = sock.recv(65536)
            if not data:
                return b""
            frames = reader.feed(data)
            if frames:
                return frames[0]


def test_mllp_listener_takes_orders_only_from_secure_nodes(pki: Pki, secure: Secure) -> None:
    node = _client(pki, cert=pki.client_cert, key=pki.client_key)
    assert read_ack(_mllp_send(secure.mllp_port, order("TLS-1", "TLS-ACC-1"), node)).code == "AA"
    for name, context in (("no client certificate", _client(pki)),
                          ("a certificate from an untrusted CA", _client(pki, cert=pki.rogue_cert,
                                                                         key=pki.rogue_key))):
        with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
            answer = _mllp_send(secure.mllp_port, order("TLS-2", "TLS-ACC-2"), context)
            assert answer == b"", name  # TLS 1.3: the refusal may arrive as the connection closing
            raise ConnectionError(name)
    # plain MLLP on the TLS port: no ACK, nothing filed, and the listener still serves secure nodes
    assert _mllp_send(secure.mllp_port, order("TLS-3", "TLS-ACC-3"), None) == b""
    assert read_ack(_mllp_send(secure.mllp_port, order("TLS-4", "TLS-ACC-4"), node)).code == "AA"
    engine = make_engine(f"sqlite:///{secure.workdir}/rs.db")
    with engine.connect() as conn:
        from sqlalchemy import text
        filed = {row[0] for row in conn.execute(text("SELECT accession_number FROM studies"))}
    engine.dispose()
    assert {"TLS-ACC-1", "TLS-ACC-4"} <= filed and not {"TLS-ACC-2", "TLS-ACC-3"} & filed
    log = secure.log()  # type: ignore[operator]
    assert "over TLSv1.3, client certificate CN=ris.hospital.test" in log and "Traceback" not in log
    # each refusal is a line (IHE ATNA: a node that fails authentication is worth recording)
    assert log.count("hl7: TLS handshake from 127.0.0.1:") >= 3, log


def _echo(port: int, context: ssl.SSLContext | None) -> bool:
    ae = AE(ae_title="TLSTEST")
    ae.add_requested_context(Verification)
    ae.acse_timeout = ae.connection_timeout = ae.network_timeout = 5
    assoc = ae.associate("127.0.0.1", port, ae_title="RADSERVICE",
                         tls_args=(context, "127.0.0.1") if context else None)
    if not assoc.is_established:
        return False
    status = assoc.send_c_echo()
    assoc.release()
    return "Status" in status and int(status.Status) == 0


def test_dicom_listener_over_tls_refuses_untrusted_and_plaintext_callers(pki: Pki, secure: Secure) -> None:
    node = _client(pki, cert=pki.client_cert, key=pki.client_key)
    assert _echo(secure.dicom_port, node)
    assert not _echo(secure.dicom_port, _client(pki, cert=pki.rogue_cert, key=pki.rogue_key))
    assert not _echo(secure.dicom_port, _client(pki))
    assert not _echo(secure.dicom_port, None)
    # a caller that connects and says nothing holds no one else up (handshakes run per connection)
    with socket.create_connection(("127.0.0.1", secure.dicom_port), timeout=5):
        started = time.monotonic()
        assert _echo(secure.dicom_port, node)
        assert time.monotonic() - started < 5
    assert "TLS handshake from 127.0.0.1 failed" in secure.log()  # type: ignore[operator]


def test_a_signed_report_reaches_ris_and_pacs_over_tls(pki: Pki, secure: Secure) -> None:
    node = _client(pki, cert=pki.client_cert, key=pki.client_key)
    assert read_ack(_mllp_send(secure.mllp_port, order("TLS-10", "TLS-ACC-10"), node)).code == "AA"
    engine = make_engine(f"sqlite:///{secure.workdir}/rs.db")
    report_id = add_report(make_sessionmaker(engine), "TLS-ACC-10", {"findings": "Normal.", "impression": "Normal."})
    engine.dispose()
    token = radservice("user", "add", "dr.tls.sign", "--role", "radiologist", "--config", str(secure.config),
                       cwd=secure.workdir).stdout.split()[-1]
    http = httpx.Client(base_url=secure.base, headers={"Authorization": f"Bearer {token}"}, verify=_client(pki),
                        timeout=10)
    assert sign_report(http, report_id, "final").status_code == 200
    deadline = time.monotonic() + 60
    while True:
        rows = http.get(f"/api/v1/reports/{report_id}/deliveries").json()
        if rows and all(row["status"] == "acked" for row in rows):
            break
        assert time.monotonic() < deadline, rows
        time.sleep(0.2)
    assert any("TLS-ACC-10" in message for message in secure.ris.received)
    assert secure.pacs_instances(), "Orthanc stored nothing over DICOM TLS"  # type: ignore[operator]
    http.close()


def test_check_reports_certificates_near_their_end_and_untrusted_peers(pki: Pki, tmp_path: Path) -> None:
    ca = trustme.CA()
    now = datetime.now(UTC)
    soon, _ = _write(ca.issue_cert("127.0.0.1", not_after=now + timedelta(days=10)), tmp_path, "soon")
    later, later_key = _write(ca.issue_cert("127.0.0.1", not_after=now + timedelta(days=400)), tmp_path, "later")
    gone, gone_key = _write(ca.issue_cert("127.0.0.1", not_before=now - timedelta(days=30),
                                          not_after=now - timedelta(days=1)), tmp_path, "gone")
    soon_key = tmp_path / "soon.key"
    config = tmp_path / "radservice.toml"
    config.write_text(f'[database]\nurl = "sqlite:///{tmp_path}/rs.db"\n[llm]\nenabled = false\n'
                      f'[server]\ntls_cert = "{soon}"\ntls_key = "{soon_key}"\n'
                      f'[hl7]\ntls_cert = "{later}"\ntls_key = "{later_key}"\n')
    checked = radservice("check", "--config", str(config), cwd=tmp_path)
    assert checked.returncode == 0, checked.stdout
    assert f"tls: WARNING (server.tls_cert {soon} ends on" in checked.stdout and "in 9 days" in checked.stdout
    assert f"tls: ok (hl7.tls_cert {later} valid until" in checked.stdout
    config.write_text(config.read_text().replace(str(later), str(gone)).replace(str(later_key), str(gone_key)))
    checked = radservice("check", "--config", str(config), cwd=tmp_path)
    assert checked.returncode == 1 and f"tls: FAILED (hl7.tls_cert {gone} ended on" in checked.stdout
    # a RIS whose certificate our CA did not sign: check says so
    rogue_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    rogue_context.load_cert_chain(str(pki.rogue_cert), str(pki.rogue_key))
    with LoopbackRis(ssl_context=rogue_context) as rogue_ris:
        config.write_text(f'[database]\nurl = "sqlite:///{tmp_path}/rs.db"\n[llm]\nenabled = false\n'
                          f'[ris]\nhost = "localhost"\nport = {rogue_ris.port}\ntls = true\ntls_ca = "{pki.ca}"\n')
        checked = radservice("check", "--config", str(config), cwd=tmp_path)
    assert checked.returncode == 1 and "ris: FAILED" in checked.stdout and \
        "the RIS's certificate is not trusted: unable to get local issuer certificate" in checked.stdout
    # a RIS that wants our certificate, and we have none: TLS 1.3 says so only after the handshake
    wants_ours = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    wants_ours.load_cert_chain(str(pki.cert), str(pki.key))
    wants_ours.load_verify_locations(str(pki.ca))
    wants_ours.verify_mode = ssl.CERT_REQUIRED
    with LoopbackRis(ssl_context=wants_ours) as strict_ris:
        config.write_text(f'[database]\nurl = "sqlite:///{tmp_path}/rs.db"\n[llm]\nenabled = false\n'
                          f'[ris]\nhost = "localhost"\nport = {strict_ris.port}\ntls = true\ntls_ca = "{pki.ca}"\n')
        checked = radservice("check", "--config", str(config), cwd=tmp_path)
    assert checked.returncode == 1 and "ris: FAILED" in checked.stdout and "see ris.tls_cert" in checked.stdout, \
        checked.stdout


@pytest.mark.parametrize(("extra", "message"), [
    ("[server]\ntls_cert = \"{cert}\"\n", "server.tls_cert and server.tls_key go together"),
    ("[ris]\ntls_ca = \"{ca}\"\n", "ris.tls is false"),
    ("[server]\ntls_cert = \"{cert}\"\ntls_key = \"{rogue_key}\"\n", "cannot be used together"),
    ("[hl7]\ntls_cert = \"{cert}\"\ntls_key = \"{key}\"\ntls_client_ca = \"{missing}\"\n", "no such file"),
])
def test_unusable_tls_settings_stop_serve_with_the_key_named(pki: Pki, tmp_path: Path, extra: str,
                                                            message: str) -> None:
    config = tmp_path / "radservice.toml"
    config.write_text(f'[database]\nurl = "sqlite:///{tmp_path}/rs.db"\n' + extra.format(
        cert=pki.cert, key=pki.key, ca=pki.ca, rogue_key=pki.rogue_key, missing=tmp_path / "missing.pem"))
    started = radservice("serve", "--config", str(config), cwd=tmp_path, timeout=60)
    assert started.returncode == 2, started.stderr
    assert message in started.stderr and "Traceback" not in started.stderr


def test_a_pacs_with_an_untrusted_certificate_is_named_as_such(pki: Pki, tmp_path: Path) -> None:
    from integrations.dicom.scu import PacsClient, PacsUnavailable
    from integrations.loopback import LoopbackPacs
    from radservice.config import DicomSettings, PacsSettings

    rogue = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    rogue.load_cert_chain(str(pki.rogue_cert), str(pki.rogue_key))
    with LoopbackPacs(tmp_path / "pacs", ssl_context=rogue) as pacs:
        client = PacsClient(PacsSettings(host="localhost", port=pacs.port, ae_title=pacs.ae_title, tls=True,
                                         tls_ca=pki.ca, connect_timeout_s=2, timeout_s=2), DicomSettings(),
                            ssl_context=_client(pki))
        with pytest.raises(PacsUnavailable, match="the PACS's certificate is not trusted: unable to get local issuer"):
            client.echo()


def test_a_dicom_handshake_fed_a_byte_at_a_time_is_cut_at_its_deadline(pki: Pki,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from integrations.dicom import listener as dicom_listener
    from radservice.config import DicomSettings

    monkeypatch.setattr(dicom_listener, "HANDSHAKE_TIMEOUT_S", 1.0)
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(str(pki.cert), str(pki.key))
    running = dicom_listener.DicomListener(DicomSettings(listen_port=0), ssl_context=server)
    _, port = running.start()
    try:
        hello = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(64)
        with socket.create_connection(("127.0.0.1", port), timeout=10) as slow:
            started = time.monotonic()
            closed = False
            for byte in hello:  # one byte every 0.2 s: each read is quick, the whole never ends
                try:
                    slow.sendall(bytes([byte]))
                except OSError:
                    closed = True
                    break
                time.sleep(0.2)
                if time.monotonic() - started > 4:
                    break
            if not closed:
                slow.settimeout(2)
                try:
                    closed = slow.recv(1) == b""
                except TimeoutError:
                    closed = False  # still waiting for the rest: no deadline
                except OSError:
                    closed = True
            assert closed and time.monotonic() - started < 4
        assert _echo(port, _client(pki)), "the listener stopped answering after cutting a slow handshake"
    finally:
        running.stop()
