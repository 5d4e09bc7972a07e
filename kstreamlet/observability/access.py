"""Who may call the HTTP port's state-exposing routes, and over what (docs/security.md, "HTTP endpoints").

The port serves two kinds of routes:

- ``/healthz`` ``/readyz`` ``/metrics``: open to whoever reaches the bind address (``http_host``),
  as kubelet probes and Prometheus scrapes need; they carry no state and no setting values;
- ``/stores...`` and ``/metadata...`` (interactive queries: a store's contents, which instance
  owns what): allowed by :meth:`HttpAccess.refusal` only to a caller that passes every configured
  mechanism —

  - ``http_auth_token``: the header ``Authorization: Bearer <token>`` (compared in constant time);
  - ``http_tls_ca_location`` (with the port serving TLS): a client certificate signed by that CA
    (mTLS; the handshake accepts clients without one, so probes and scrapes still work, and these
    routes refuse them);
  - neither configured: a caller on loopback only, unless ``query_access = "open"`` says the
    network in front of the port is trusted.

With ``http_tls_certificate_location`` / ``http_tls_key_location`` the whole port speaks HTTPS.
Forwarded queries (an instance asking a key's owner) carry the token and present the instance's
own certificate (:meth:`HttpAccess.client_headers`, :meth:`HttpAccess.client_context`), and
verify the owner's certificate with ``http_tls_ca_location`` (else the system's CAs).

A refusal says what is missing and names the setting — never the expected or the offered token.
"""

from __future__ import annotations

import hmac
import ipaddress
import ssl
from dataclasses import dataclass
from typing import Any

from kstreamlet.errors import ConfigError

#: The routes that expose state or topology (the rest of the port is probes and metrics).
PROTECTED_PREFIXES = ("/stores", "/metadata")


def is_protected(path: str) -> bool:
    return any(path == p or path.startswith(p + "/") for p in PROTECTED_PREFIXES)


def _is_loopback(host: str) -> bool:
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    mapped = getattr(ip, "ipv4_mapped", None)
    return bool(ip.is_loopback or (mapped is not None and mapped.is_loopback))


@dataclass(frozen=True)
class HttpAccess:
    """The HTTP port's protection, built from the settings by :meth:`from_settings`."""

    token: str | None = None
    certificate: str | None = None
    key: str | None = None
    ca: str | None = None
    open: bool = False

    @classmethod
    def from_settings(cls, settings: Any) -> "HttpAccess":
        token = settings.http_auth_token.get_secret_value() if settings.http_auth_token is not None else None
        return cls(token=token or None, certificate=settings.http_tls_certificate_location,
                   key=settings.http_tls_key_location, ca=settings.http_tls_ca_location,
                   open=settings.query_access == "open")

    @property
    def tls(self) -> bool:
        return self.certificate is not None

    @property
    def mtls(self) -> bool:
        return self.tls and self.ca is not None

    @property
    def scheme(self) -> str:
        return "https" if self.tls else "http"

    def describe(self) -> str:
        """How the protected routes are guarded, for the start-up log (no secret in it)."""
        ways = [w for w, on in (("bearer token", self.token is not None), ("client certificate", self.mtls)) if on]
        if ways:
            return " + ".join(ways)
        return "open to any client" if self.open else "loopback clients only"

    # --- the server side ---------------------------------------------------------------------------

    def server_context(self) -> ssl.SSLContext | None:
        """The TLS context of the port (None: plain HTTP). Fails fast, naming the setting."""
        if not self.tls:
            return None
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        try:
            ctx.load_cert_chain(self.certificate or "", self.key)
        except (OSError, ssl.SSLError) as e:
            raise ConfigError(f"http_tls_certificate_location / http_tls_key_location (env "
                              f"KSTREAMLET_HTTP_TLS_CERTIFICATE_LOCATION / KSTREAMLET_HTTP_TLS_KEY_LOCATION): cannot "
                              f"load the HTTP port's certificate and key: {getattr(e, 'strerror', None) or e}") from None
        if self.ca is not None:
            try:
                ctx.load_verify_locations(cafile=self.ca)
            except (OSError, ssl.SSLError) as e:
                raise ConfigError(f"http_tls_ca_location (env KSTREAMLET_HTTP_TLS_CA_LOCATION): cannot load the CA "
                                  f"file: {getattr(e, 'strerror', None) or e}") from None
            # Optional at the handshake: probes and scrapes have no client certificate; the
            # protected routes refuse a request without one (refusal()).
            ctx.verify_mode = ssl.CERT_OPTIONAL
        return ctx

    def refusal(self, client_host: str, headers: dict[str, str], peer_certificate: Any) -> tuple[int, str] | None:
        """``(status, message)`` when a request to a protected route is not allowed, else None.

        ``peer_certificate`` is the TLS peer's verified certificate (``getpeercert()``; empty or
        None when the client sent none)."""
        if self.token is not None:
            auth = next((v for k, v in headers.items() if k.lower() == "authorization"), "")
            scheme, _, offered = auth.partition(" ")
            if scheme.lower() != "bearer" or not offered.strip():
                return 401, "a bearer token is required (Authorization: Bearer <http_auth_token>)"
            if not hmac.compare_digest(offered.strip().encode(), self.token.encode()):
                return 401, "the bearer token is not the one configured (setting http_auth_token)"
        if self.mtls and not peer_certificate:
            return 403, ("a client certificate signed by the CA of http_tls_ca_location is required")
        if self.token is None and not self.mtls and not self.open and not _is_loopback(client_host):
            return 403, ("queries are served to loopback clients only: set http_auth_token (env "
                         "KSTREAMLET_HTTP_AUTH_TOKEN) or a client CA (http_tls_ca_location), or query_access=open "
                         "(env KSTREAMLET_QUERY_ACCESS) when the network in front of the port is trusted")
        return None

    # --- the client side (forwarded queries) -------------------------------------------------------

    def client_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token is not None else {}

    def client_context(self) -> ssl.SSLContext | None:
        """The context an instance asks another one with over https (None: the default)."""
        if not self.tls and self.ca is None:
            return None
        ctx = ssl.create_default_context(cafile=self.ca) if self.ca is not None else ssl.create_default_context()
        if self.tls:
            ctx.load_cert_chain(self.certificate or "", self.key)
        return ctx


__all__ = ["HttpAccess", "PROTECTED_PREFIXES", "is_protected"]
