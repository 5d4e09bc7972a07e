"""Protection of the HTTP port's query routes (observability/access.py), over real HTTP and HTTPS
on loopback: bearer token, mTLS, loopback-only by default, the settings that configure them, and
error pages that carry no secret and no setting value. Certificates: a throwaway CA (openssl, as
the secured test broker's, kstreamlet/dev/security.py)."""

from __future__ import annotations

import http.client
import json
import socket
import ssl
from pathlib import Path

import pytest
from pydantic import ValidationError

from kstreamlet import Settings
from kstreamlet.dev.security import BrokerSecurity
from kstreamlet.observability import start_http_server
from kstreamlet.observability.access import HttpAccess
from kstreamlet.query import InstanceInfo, QueryService

TOKEN = "s3cr3t-query-token-" + "x" * 12
SECRET_VALUE = "value-that-must-not-leak"


def queries(path: str, query: str, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
    if path == "/stores/boom":
        raise RuntimeError(f"a bug with a state value in it: {SECRET_VALUE}")
    seen = {k.lower(): v for k, v in headers.items()}
    return 200, {}, json.dumps({"path": path, "forwarded_by": seen.get("x-kstreamlet-forwarded")}).encode()


@pytest.fixture(scope="module")
def tls(tmp_path_factory) -> BrokerSecurity:
    """ca.pem, a server pair for localhost/127.0.0.1 (broker.pem/.key), a client pair (client.pem/.key)
    signed by the CA, and an unrelated CA (other-ca.pem)."""
    return BrokerSecurity(directory=tmp_path_factory.mktemp("http-tls")).generate()


@pytest.fixture
def serve():
    servers = []

    def start(access: HttpAccess):
        s = start_http_server(0, health=lambda: True, ready=lambda: True, host="127.0.0.1", queries=queries,
                              access=access)
        servers.append(s)
        return s

    yield start
    for s in servers:
        s.shutdown()


def request(server, path: str, headers: dict[str, str] | None = None,
            context: ssl.SSLContext | None = None) -> tuple[int, dict[str, str], bytes]:
    if context is not None:
        conn: http.client.HTTPConnection = http.client.HTTPSConnection("127.0.0.1", server.port, timeout=5,
                                                                        context=context)
    else:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    try:
        conn.request("GET", path, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def client_context(tls: BrokerSecurity, cert: bool) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(tls.ca_file))
    if cert:
        ctx.load_cert_chain(str(tls.client_cert_file), str(tls.client_key_file))
    return ctx


# --- who may ask ----------------------------------------------------------------------------------

def test_by_default_queries_answer_loopback_clients_only_and_probes_anyone():
    access = HttpAccess()
    assert access.refusal("127.0.0.1", {}, None) is None
    assert access.refusal("::1", {}, None) is None
    assert access.refusal("::ffff:127.0.0.1", {}, None) is None
    status, message = access.refusal("10.1.2.3", {}, None) or (0, "")
    assert status == 403 and "http_auth_token" in message and "KSTREAMLET_QUERY_ACCESS" in message
    assert HttpAccess(open=True).refusal("10.1.2.3", {}, None) is None
    assert access.describe() == "loopback clients only"


def test_a_bearer_token_guards_stores_and_metadata_but_not_probes_or_metrics(serve):
    server = serve(HttpAccess(token=TOKEN))
    for path in ("/stores", "/stores/counts/a", "/metadata", "/metadata/counts/a"):
        status, headers, body = request(server, path)
        assert status == 401, path
        assert headers["www-authenticate"].startswith("Bearer")
        assert TOKEN.encode() not in body
        status, _, body = request(server, path, {"Authorization": "Bearer not-the-token"})
        assert status == 401 and b"http_auth_token" in body
        assert TOKEN.encode() not in body and b"not-the-token" not in body
        status, _, body = request(server, path, {"Authorization": f"Bearer {TOKEN}"})
        assert status == 200 and json.loads(body)["path"] == path
    for path in ("/healthz", "/readyz", "/metrics"):
        assert request(server, path)[0] == 200, path
    # A token is needed from loopback too: it is the mechanism, not the address.
    assert request(server, "/stores", {"Authorization": f"Basic {TOKEN}"})[0] == 401


def test_https_with_client_certificates_guards_queries_and_lets_probes_in_without_one(serve, tls):
    access = HttpAccess(certificate=str(tls.directory / "broker.pem"), key=str(tls.directory / "broker.key"),
                        ca=str(tls.ca_file))
    server = serve(access)
    assert server.url.startswith("https://")
    assert request(server, "/healthz", context=client_context(tls, cert=False))[0] == 200
    assert request(server, "/metrics", context=client_context(tls, cert=False))[0] == 200
    status, _, body = request(server, "/stores", context=client_context(tls, cert=False))
    assert status == 403 and b"http_tls_ca_location" in body
    assert request(server, "/stores", context=client_context(tls, cert=True))[0] == 200
    assert access.describe() == "client certificate"


def test_a_client_certificate_of_another_ca_fails_the_handshake_and_the_server_keeps_serving(serve, tls):
    d = tls.directory
    other = d / "other-client"
    other.mkdir(exist_ok=True)
    import subprocess
    subprocess.run(["openssl", "req", "-newkey", "rsa:2048", "-nodes", "-keyout", "c.key", "-out", "c.csr",
                    "-subj", "/CN=intruder"], cwd=other, check=True, capture_output=True)
    subprocess.run(["openssl", "x509", "-req", "-in", "c.csr", "-CA", str(d / "other-ca.pem"), "-CAkey",
                    str(d / "other-ca.key"), "-CAcreateserial", "-out", "c.pem", "-days", "1"],
                   cwd=other, check=True, capture_output=True)
    server = serve(HttpAccess(certificate=str(d / "broker.pem"), key=str(d / "broker.key"), ca=str(tls.ca_file)))
    ctx = ssl.create_default_context(cafile=str(tls.ca_file))
    ctx.load_cert_chain(str(other / "c.pem"), str(other / "c.key"))
    with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
        request(server, "/stores", context=ctx)
    # Plain HTTP to the HTTPS port: refused at the handshake, and nothing is stuck.
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as s:
        s.sendall(b"GET /stores HTTP/1.1\r\nHost: x\r\n\r\n")
        s.recv(100)
    assert request(server, "/stores", context=client_context(tls, cert=True))[0] == 200


def test_token_and_certificate_together_need_both(serve, tls):
    d = tls.directory
    server = serve(HttpAccess(token=TOKEN, certificate=str(d / "broker.pem"), key=str(d / "broker.key"),
                              ca=str(tls.ca_file)))
    auth = {"Authorization": f"Bearer {TOKEN}"}
    assert request(server, "/stores", auth, context=client_context(tls, cert=False))[0] == 403
    assert request(server, "/stores", context=client_context(tls, cert=True))[0] == 401
    assert request(server, "/stores", auth, context=client_context(tls, cert=True))[0] == 200


def test_forwarded_queries_present_the_token_and_the_certificate(serve, tls):
    d = tls.directory
    access = HttpAccess(token=TOKEN, certificate=str(d / "broker.pem"), key=str(d / "broker.key"),
                        ca=str(tls.ca_file))
    owner_server = serve(access)
    svc = QueryService(Settings(application_id="fwd"), None, None, lambda t: 1, "m1",  # type: ignore[arg-type]
                       url="https://localhost:1", access=access)
    owner = InstanceInfo("m2", f"https://localhost:{owner_server.port}", "fwd-m2")
    status, _, body = svc.forward(owner, "/stores/counts", "")
    assert status == 200 and json.loads(body) == {"path": "/stores/counts", "forwarded_by": "m1"}
    # Without them the owner refuses: the forwarding client really is what passed.
    bare = QueryService(Settings(application_id="fwd"), None, None, lambda t: 1, "m1",  # type: ignore[arg-type]
                        access=HttpAccess(ca=str(tls.ca_file)))
    assert bare.forward(owner, "/stores/counts", "")[0] == 401


def test_error_pages_carry_no_state_and_no_secret(serve):
    server = serve(HttpAccess(token=TOKEN))
    status, _, body = request(server, "/stores/boom", {"Authorization": f"Bearer {TOKEN}"})
    assert status == 500 and json.loads(body) == {"error": "internal error"}
    for path in ("/nope", "/stores/boom", "/metadata"):
        _, headers, body = request(server, path, {"Authorization": "Bearer wrong"})
        blob = body + json.dumps(headers).encode()
        assert TOKEN.encode() not in blob and SECRET_VALUE.encode() not in blob and b"wrong" not in blob


# --- the settings ---------------------------------------------------------------------------------

def test_http_settings_map_onto_the_access(tls, monkeypatch):
    d = tls.directory
    monkeypatch.setenv("KSTREAMLET_HTTP_AUTH_TOKEN", TOKEN)
    monkeypatch.setenv("KSTREAMLET_HTTP_TLS_CERTIFICATE_LOCATION", str(d / "broker.pem"))
    monkeypatch.setenv("KSTREAMLET_HTTP_TLS_KEY_LOCATION", str(d / "broker.key"))
    monkeypatch.setenv("KSTREAMLET_HTTP_TLS_CA_LOCATION", str(tls.ca_file))
    monkeypatch.setenv("KSTREAMLET_HTTP_HOST", "127.0.0.1")
    s = Settings(application_id="a")
    access = HttpAccess.from_settings(s)
    assert (access.token, access.mtls, access.scheme, s.http_host) == (TOKEN, True, "https", "127.0.0.1")
    assert access.describe() == "bearer token + client certificate"
    assert TOKEN not in repr(s) and TOKEN not in json.dumps(s.report(), default=str)
    assert HttpAccess.from_settings(Settings(application_id="a", query_access="open")).open


@pytest.mark.parametrize("changes, needle", [
    ({"http_tls_certificate_location": "CERT"}, "http_tls_key_location (env KSTREAMLET_HTTP_TLS_KEY_LOCATION)"),
    ({"http_tls_ca_location": "CA"}, "need HTTPS"),
    ({"http_tls_certificate_location": "/nope.pem", "http_tls_key_location": "KEY"},
     "http_tls_certificate_location (env KSTREAMLET_HTTP_TLS_CERTIFICATE_LOCATION): no readable file at /nope.pem"),
    ({"http_auth_token": "  "}, "http_auth_token (env KSTREAMLET_HTTP_AUTH_TOKEN) is empty"),
    ({"query_access": "everyone"}, "query_access"),
])
def test_incoherent_http_protection_is_refused_naming_the_settings(tls, changes, needle):
    files = {"CERT": str(tls.directory / "broker.pem"), "KEY": str(tls.directory / "broker.key"),
             "CA": str(tls.ca_file)}
    with pytest.raises(ValidationError) as e:
        Settings(application_id="a", **{k: files.get(v, v) for k, v in changes.items()})
    assert needle in str(e.value)


def test_a_certificate_that_cannot_be_loaded_fails_at_start_naming_the_setting(tmp_path: Path):
    bad = tmp_path / "bad.pem"
    bad.write_text("not a certificate\n")
    from kstreamlet.errors import ConfigError
    with pytest.raises(ConfigError, match="http_tls_certificate_location"):
        start_http_server(0, health=lambda: True, ready=lambda: True, host="127.0.0.1",
                          access=HttpAccess(certificate=str(bad), key=str(bad)))
