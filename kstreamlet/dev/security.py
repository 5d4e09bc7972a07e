"""Throwaway TLS material and SCRAM users for a secured local broker (``SASL_SSL`` listener).

:class:`BrokerSecurity` generates, with the machine's ``openssl``, a CA, a broker certificate
for ``127.0.0.1``/``localhost`` signed by it (a PKCS#12 keystore for the JVM), a client
certificate and key for mTLS, and a second, unrelated CA (to test an untrusted certificate). It
also holds the SCRAM-SHA-512 users the broker is formatted with (``kafka-storage format
--add-scram``) and the broker properties that turn on the listener and the KRaft
``StandardAuthorizer``.

The plaintext listener stays: its principal is ``User:ANONYMOUS``, a super user, so the harness,
fixtures and an operator's admin client keep working on it; the ``admin`` SCRAM user is a super user
too. Every other SCRAM user has only the ACLs a test grants it.

Example::

    sec = BrokerSecurity(users={"app": "app-secret"})
    with LocalKafkaBroker(security=sec) as broker:
        conf = sec.client_config("app") | {"bootstrap.servers": broker.sasl_bootstrap_servers}
"""

from __future__ import annotations

import secrets
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

#: The SCRAM mechanism of the secured listener.
MECHANISM = "SCRAM-SHA-512"
#: Name of the super user created on every secured broker (besides ``User:ANONYMOUS`` on plaintext).
ADMIN_USER = "admin"


class SecuritySetupError(RuntimeError):
    """The TLS material could not be generated (openssl missing or failing)."""


def _openssl(*args: str, cwd: Path) -> None:
    exe = shutil.which("openssl")
    if not exe:
        raise SecuritySetupError("`openssl` was not found on PATH; it generates the secured broker's throwaway CA "
                                 "(Debian: `apt-get install -y openssl`)")
    proc = subprocess.run([exe, *args], cwd=cwd, capture_output=True, text=True, timeout=60)
    if proc.returncode != 0:
        raise SecuritySetupError(f"openssl {args[0]} failed: {proc.stderr.strip()[-500:]}")


class BrokerSecurity:
    """TLS files and SCRAM users of a secured local broker (or cluster: all nodes share them).

    ``users``: SCRAM-SHA-512 users to create (name → password); ``admin`` (a super user) is added
    with a random password unless given. Files are written to ``directory`` (a temp dir by default)
    on first use of :meth:`generate` (the broker calls it)."""

    def __init__(self, users: dict[str, str] | None = None, directory: Path | None = None) -> None:
        self.users: dict[str, str] = dict(users or {})
        self.users.setdefault(ADMIN_USER, secrets.token_urlsafe(12))
        self._own_dir = directory is None
        self.directory = Path(directory or tempfile.mkdtemp(prefix="kstreamlet-tls-"))
        self.keystore_password = secrets.token_urlsafe(12)
        self._generated = False

    # --- files ----------------------------------------------------------------------------------

    @property
    def ca_file(self) -> Path:
        """PEM of the CA that signed the broker's (and the client's) certificate."""
        return self.directory / "ca.pem"

    @property
    def untrusted_ca_file(self) -> Path:
        """PEM of an unrelated CA: a client trusting only it must refuse the broker."""
        return self.directory / "other-ca.pem"

    @property
    def keystore_file(self) -> Path:
        return self.directory / "broker.p12"

    @property
    def client_cert_file(self) -> Path:
        """Client certificate (CN=kstreamlet-client) signed by :attr:`ca_file`, for mTLS."""
        return self.directory / "client.pem"

    @property
    def client_key_file(self) -> Path:
        return self.directory / "client.key"

    def generate(self) -> "BrokerSecurity":
        """Write the CA, the broker keystore, the client pair and the unrelated CA (once)."""
        if self._generated:
            return self
        d = self.directory
        d.mkdir(parents=True, exist_ok=True)
        days = "7"
        _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", days,
                 "-subj", "/CN=kstreamlet-test-ca", cwd=d)
        _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "other-ca.key", "-out", "other-ca.pem",
                 "-days", days, "-subj", "/CN=kstreamlet-untrusted-ca", cwd=d)
        (d / "broker.ext").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "broker.key", "-out", "broker.csr",
                 "-subj", "/CN=localhost", cwd=d)
        _openssl("x509", "-req", "-in", "broker.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
                 "-out", "broker.pem", "-days", days, "-extfile", "broker.ext", cwd=d)
        _openssl("pkcs12", "-export", "-in", "broker.pem", "-inkey", "broker.key", "-certfile", "ca.pem",
                 "-name", "broker", "-out", "broker.p12", "-passout", f"pass:{self.keystore_password}", cwd=d)
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "client.key", "-out", "client.csr",
                 "-subj", "/CN=kstreamlet-client", cwd=d)
        _openssl("x509", "-req", "-in", "client.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
                 "-out", "client.pem", "-days", days, cwd=d)
        for p in d.iterdir():
            p.chmod(0o600)
        self._generated = True
        return self

    def cleanup(self) -> None:
        if self._own_dir:
            shutil.rmtree(self.directory, ignore_errors=True)

    # --- broker side ------------------------------------------------------------------------------

    def broker_config(self) -> dict[str, str]:
        """Properties of the ``SASL_SSL`` listener and the authorizer (the listener itself is added
        to ``listeners`` by the broker)."""
        self.generate()
        return {
            "sasl.enabled.mechanisms": MECHANISM,
            "listener.name.sasl_ssl.sasl.enabled.mechanisms": MECHANISM,
            "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config":
                "org.apache.kafka.common.security.scram.ScramLoginModule required;",
            "listener.name.sasl_ssl.ssl.keystore.type": "PKCS12",
            "listener.name.sasl_ssl.ssl.keystore.location": str(self.keystore_file),
            "listener.name.sasl_ssl.ssl.keystore.password": self.keystore_password,
            "listener.name.sasl_ssl.ssl.key.password": self.keystore_password,
            "listener.name.sasl_ssl.ssl.truststore.type": "PEM",
            "listener.name.sasl_ssl.ssl.truststore.location": str(self.ca_file),
            # mTLS: a client certificate is checked when presented (SASL still names the principal).
            "listener.name.sasl_ssl.ssl.client.auth": "requested",
            "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
            # Plaintext (the harness, inter-broker and controller traffic) is ANONYMOUS: a super user.
            "super.users": f"User:ANONYMOUS;User:{ADMIN_USER}",
            "allow.everyone.if.no.acl.found": "false",
        }

    def format_args(self) -> list[str]:
        """``kafka-storage format`` arguments creating the SCRAM users in the bootstrap metadata."""
        args: list[str] = []
        for name, password in self.users.items():
            args += ["--add-scram", f"{MECHANISM}=[name={name},password={password}]"]
        return args

    # --- client side ------------------------------------------------------------------------------

    def client_config(self, user: str, password: str | None = None) -> dict[str, Any]:
        """librdkafka properties of a client logging in as ``user`` (bootstrap servers not included)."""
        self.generate()
        return {
            "security.protocol": "SASL_SSL",
            "sasl.mechanisms": MECHANISM,
            "sasl.username": user,
            "sasl.password": self.users[user] if password is None else password,
            "ssl.ca.location": str(self.ca_file),
        }

    def settings(self, user: str, password: str | None = None) -> dict[str, Any]:
        """kstreamlet settings (``App(...)`` keywords) of an app logging in as ``user``."""
        self.generate()
        return {
            "security_protocol": "SASL_SSL",
            "sasl_mechanism": MECHANISM,
            "sasl_username": user,
            "sasl_password": self.users[user] if password is None else password,
            "ssl_ca_location": str(self.ca_file),
        }

    def env(self, user: str, password: str | None = None) -> dict[str, str]:
        """The same as ``KSTREAMLET_*`` variables (for ``kstreamlet run`` in a subprocess)."""
        return {f"KSTREAMLET_{k.upper()}": str(v) for k, v in self.settings(user, password).items()}


def create_scram_user(admin: Any, name: str, password: str, timeout: float = 30.0) -> None:
    """Create (or change the password of) SCRAM-SHA-512 user ``name`` through the admin API (a
    super user's ``AdminClient``, e.g. on the plaintext listener)."""
    from confluent_kafka.admin import ScramCredentialInfo, ScramMechanism, UserScramCredentialUpsertion

    up = UserScramCredentialUpsertion(name, ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 4096),
                                      password.encode())
    for fut in admin.alter_user_scram_credentials([up], request_timeout=timeout).values():
        fut.result(timeout)
