"""SafeHttpClient against a real local receiver: pinning, Host/SNI, redirects, reuse."""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import socket
import ssl
import threading
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests
from pytest_httpserver import HTTPServer

from chalicelib.delivery.safe_http import SafeHttpClient
from chalicelib.domain.urlsafety import InvalidUrl, UnsafeDestination


class Resolver:
    """Fake DNS: a fixed table, or a list of successive answers; counts lookups."""

    def __init__(
        self, table: dict[str, list[str]] | None = None, sequence: list[list[str]] | None = None
    ) -> None:
        self.table = table or {}
        self.sequence: list[list[str]] = list(sequence or [])
        self.calls: list[tuple[str, int]] = []

    def __call__(self, host: str, port: int) -> list[str]:
        self.calls.append((host, port))
        if self.sequence:
            return self.sequence.pop(0) if len(self.sequence) > 1 else self.sequence[0]
        if host not in self.table:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return self.table[host]


@pytest.fixture(scope="module")
def _plain_server():
    server = HTTPServer(host="127.0.0.1", port=0, threaded=True)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def receiver(_plain_server):
    """A real HTTP receiver on 127.0.0.1, with a fresh request log for each test."""
    _plain_server.clear()
    yield _plain_server
    _plain_server.clear()


@pytest.fixture
def client():
    with SafeHttpClient() as c:
        yield c


LOCAL_DNS = Resolver({"receiver.test": ["127.0.0.1"]})


def send(client, url, *, resolver=LOCAL_DNS, allow_private=True, body=b"", **kwargs):
    return client.send(
        kwargs.pop("method", "POST"),
        url,
        headers=kwargs.pop("headers", {"Content-Type": "application/octet-stream"}),
        body=body,
        timeout=kwargs.pop("timeout", 5.0),
        allow_private=allow_private,
        resolver=resolver,
        **kwargs,
    )


def test_request_arrives_with_original_host_header_and_intact_body(client, receiver):
    receiver.expect_request("/hook", method="POST").respond_with_data("thanks", status=201)
    body = bytes(range(256)) * 40
    response = send(
        client,
        f"http://receiver.test:{receiver.port}/hook",
        body=body,
        headers={"X-Signature": "abc", "Content-Type": "application/octet-stream"},
    )

    assert response.status_code == 201
    assert response.text == "thanks"
    assert response.url == f"http://receiver.test:{receiver.port}/hook"
    request, _ = receiver.log[0]
    assert request.headers["Host"] == f"receiver.test:{receiver.port}"
    assert request.headers["X-Signature"] == "abc"
    assert request.get_data() == body


def test_params_are_added_to_the_query(client, receiver):
    receiver.expect_request(
        "/q", method="GET", query_string={"a": "1", "b": "x y"}
    ).respond_with_data("ok")
    response = send(
        client,
        f"http://receiver.test:{receiver.port}/q",
        method="GET",
        body=None,
        params={"a": "1", "b": "x y"},
    )
    assert response.status_code == 200
    assert len(receiver.log) == 1


def test_redirects_are_returned_not_followed(client, receiver):
    target = f"http://receiver.test:{receiver.port}/elsewhere"
    receiver.expect_request("/hook").respond_with_data("", status=302, headers={"Location": target})
    receiver.expect_request("/elsewhere").respond_with_data("followed")

    response = send(client, f"http://receiver.test:{receiver.port}/hook")

    assert response.status_code == 302
    assert response.headers["Location"] == target
    assert [req.path for req, _ in receiver.log] == ["/hook"]


class _KeepAliveHandler(BaseHTTPRequestHandler):
    """Minimal HTTP/1.1 receiver that keeps connections open and records client ports."""

    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.server.client_ports.append(self.client_address[1])  # type: ignore[attr-defined]
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, format, *args) -> None:
        pass


@pytest.fixture
def keepalive_receiver():
    # pytest-httpserver (werkzeug) sends "Connection: close" on every response, so reuse
    # can only be observed against a server that honours keep-alive.
    server = ThreadingHTTPServer(("127.0.0.1", 0), _KeepAliveHandler)
    server.client_ports = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_connections_are_reused_across_sends(client, keepalive_receiver):
    port = keepalive_receiver.server_address[1]
    url = f"http://receiver.test:{port}/hook"
    for _ in range(3):
        assert send(client, url, body=b"x").status_code == 200

    assert len(keepalive_receiver.client_ports) == 3
    assert len(set(keepalive_receiver.client_ports)) == 1


def test_concurrent_sends_share_the_client(client, receiver):
    receiver.expect_request("/hook").respond_with_data("ok")
    url = f"http://receiver.test:{receiver.port}/hook"
    with ThreadPoolExecutor(max_workers=8) as pool:
        statuses = list(
            pool.map(lambda i: send(client, url, body=b"%d" % i).status_code, range(32))
        )
    assert statuses == [200] * 32
    assert sorted(req.get_data() for req, _ in receiver.log) == sorted(b"%d" % i for i in range(32))


def test_private_destination_is_refused_before_connecting(client, receiver):
    receiver.expect_request("/hook").respond_with_data("ok")
    with pytest.raises(UnsafeDestination, match="loopback"):
        send(client, f"http://receiver.test:{receiver.port}/hook", allow_private=False)
    with pytest.raises(UnsafeDestination, match="loopback"):
        send(client, f"http://127.0.0.1:{receiver.port}/hook", allow_private=False)
    with pytest.raises(UnsafeDestination, match="loopback"):
        send(client, f"http://localhost:{receiver.port}/hook", allow_private=False)
    assert receiver.log == []


def test_metadata_is_refused_even_in_development(client):
    resolver = Resolver({"meta.test": ["169.254.169.254"]})
    with pytest.raises(UnsafeDestination, match="metadata"):
        send(client, "http://meta.test/latest/meta-data/", resolver=resolver, allow_private=True)


@pytest.mark.parametrize(
    "url", ["ftp://receiver.test/", "http://user:pw@receiver.test/", "http://receiver.test:0/"]
)
def test_malformed_urls_are_refused(client, url):
    with pytest.raises(InvalidUrl):
        send(client, url)


def test_rebinding_resolver_cannot_reach_loopback(client, receiver, monkeypatch):
    """DNS says public to the check and loopback afterwards; the loopback server sees nothing.

    The system resolver is rigged too, so a client that looked the name up again at
    connect time (instead of using the checked address) would reach the receiver.
    """
    receiver.expect_request("/hook").respond_with_data("reached")
    real_getaddrinfo = socket.getaddrinfo

    def rigged_getaddrinfo(host, *args, **kwargs):
        if host == "rebind.test":
            host = "127.0.0.1"
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", rigged_getaddrinfo)
    rebinding = Resolver(sequence=[["192.88.0.1"], ["127.0.0.1"]])  # public, then loopback
    url = f"http://rebind.test:{receiver.port}/hook"

    # The pinned public address is unreachable from the sandbox, so an error is expected.
    with contextlib.suppress(requests.RequestException):
        send(client, url, resolver=rebinding, allow_private=False, timeout=0.5)
    assert rebinding.calls == [("rebind.test", receiver.port)]
    assert receiver.log == []

    with pytest.raises(UnsafeDestination):
        send(client, url, resolver=rebinding, allow_private=False, timeout=0.5)
    assert receiver.log == []


def test_next_address_is_tried_when_connecting_fails(client, receiver):
    # 127.0.0.2 is loopback too, but nothing listens there: connection refused.
    resolver = Resolver({"multi.test": ["127.0.0.2", "127.0.0.1"]})
    receiver.expect_request("/hook").respond_with_data("ok")
    response = send(client, f"http://multi.test:{receiver.port}/hook", resolver=resolver)
    assert response.status_code == 200
    assert len(receiver.log) == 1


# ------------------------------------------------------------------ https: SNI and verification


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory):
    """A throwaway CA and a server certificate for receiver.test, written as PEM files.

    The certificate also names 127.0.0.1, so a client that verified against the pinned IP
    instead of the hostname would wrongly accept it: the impostor test catches that.
    """
    x509 = pytest.importorskip("cryptography.x509")
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Ringback test CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True,
                crl_sign=True, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "receiver.test")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("receiver.test"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .add_extension(x509.ExtendedKeyUsage([x509.OID_SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    folder = tmp_path_factory.mktemp("tls")
    (folder / "ca.pem").write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    (folder / "server.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (folder / "server.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return folder


@pytest.fixture(scope="module")
def _tls_server(tls_files):
    server_names: list[str | None] = []
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(tls_files / "server.pem", tls_files / "server.key")
    context.sni_callback = lambda sock, name, ctx: server_names.append(name)
    server = HTTPServer(host="127.0.0.1", port=0, ssl_context=context, threaded=True)
    server.start()
    server.server_names = server_names  # type: ignore[attr-defined]
    yield server
    server.stop()


@pytest.fixture
def tls_receiver(_tls_server):
    """An https receiver holding a certificate for receiver.test; records SNI names sent."""
    _tls_server.clear()
    _tls_server.server_names.clear()
    yield _tls_server
    _tls_server.clear()


def test_https_sends_sni_and_verifies_against_the_hostname(tls_files, tls_receiver):
    tls_receiver.expect_request("/hook").respond_with_data("secure")
    resolver = Resolver({"receiver.test": ["127.0.0.1"]})
    with SafeHttpClient(ca_bundle=str(tls_files / "ca.pem")) as client:
        response = send(
            client, f"https://receiver.test:{tls_receiver.port}/hook", resolver=resolver
        )

    assert response.status_code == 200
    assert response.text == "secure"
    assert tls_receiver.server_names == ["receiver.test"]
    request, _ = tls_receiver.log[0]
    assert request.headers["Host"] == f"receiver.test:{tls_receiver.port}"


def test_https_rejects_a_certificate_for_another_name(tls_files, tls_receiver):
    tls_receiver.expect_request("/hook").respond_with_data("secure")
    resolver = Resolver({"impostor.test": ["127.0.0.1"]})
    with (
        SafeHttpClient(ca_bundle=str(tls_files / "ca.pem")) as client,
        pytest.raises(requests.exceptions.SSLError),
    ):
        send(client, f"https://impostor.test:{tls_receiver.port}/hook", resolver=resolver)
    assert tls_receiver.log == []


def test_https_verifies_against_the_public_trust_store_by_default(tls_receiver):
    tls_receiver.expect_request("/hook").respond_with_data("secure")
    with SafeHttpClient() as client, pytest.raises(requests.exceptions.SSLError):
        send(client, f"https://receiver.test:{tls_receiver.port}/hook")
    assert tls_receiver.log == []
