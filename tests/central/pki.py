"""A site's certificates for the TLS tests, made with the `openssl` command in a folder of the test's own.

The site CA signs the broker's certificate (for `localhost` and 127.0.0.1, as subjectAltName) and one
client certificate per lane (CN = the lane's MQTT client id). For the refusals there are an unrelated
CA, a broker certificate for another host name, one that names localhost in its CN only (no
subjectAltName), and one that expired yesterday.
EC keys (P-256): the whole set takes a few tens of milliseconds.

`openssl req -x509 -CA` (OpenSSL 3.0) signs in the same call that makes the key; OpenSSL 3.0's
`req` and `x509` cannot set a start date in the past, so the expired certificate comes from
`openssl ca`, which can (`-startdate`/`-enddate`).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

OPENSSL = shutil.which("openssl")

BROKER_NAMES = "DNS:localhost,IP:127.0.0.1"

# One config for every call: the extensions of a CA, a broker (server) and a lane (client)
# certificate, and the minimal database `openssl ca` needs. $ENV::SAN is the server's names.
_CONFIG = """\
[req]
distinguished_name = dn
prompt = no
[dn]
[ca_ext]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
[server_ext]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = $ENV::SAN
authorityKeyIdentifier = keyid
[server_ext_no_names]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
authorityKeyIdentifier = keyid
[client_ext]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = clientAuth
authorityKeyIdentifier = keyid
[ca]
default_ca = issuer
[issuer]
database = index.txt
new_certs_dir = .
serial = serial
default_md = sha256
policy = anything
unique_subject = no
[anything]
commonName = supplied
"""


@dataclass(frozen=True)
class KeyPair:
    """A certificate and its private key (PEM files)."""

    cert: Path
    key: Path


@dataclass(frozen=True)
class Pki:
    folder: Path
    ca: Path  # the site CA's certificate: what lanes and the broker trust
    other_ca: Path  # a CA nobody here trusts
    broker: KeyPair  # localhost and 127.0.0.1, signed by the site CA
    wrong_name: KeyPair  # signed by the site CA, but for another host name
    cn_only: KeyPair  # signed by the site CA, CN = localhost but no subjectAltName
    expired: KeyPair  # localhost and 127.0.0.1, signed by the site CA, expired yesterday

    def lane(self, client_id: str, signed_by_other_ca: bool = False) -> KeyPair:
        """A lane's client certificate, CN = its client id (made on first use)."""
        issuer = "other-ca" if signed_by_other_ca else "ca"
        pair = KeyPair(self.folder / f"{client_id}.{issuer}.crt", self.folder / f"{client_id}.{issuer}.key")
        if not pair.cert.exists():
            _sign(self.folder, pair, client_id, issuer, "client_ext")
        return pair


def make_pki(folder: Path) -> Pki:
    """The certificates above, in `folder` (which must exist). Needs the `openssl` command."""
    if OPENSSL is None:
        raise RuntimeError("openssl is not installed")
    (folder / "openssl.cnf").write_text(_CONFIG)
    for name in ("ca", "other-ca"):
        _openssl(folder, "req", "-x509", "-extensions", "ca_ext", *_new_key(folder / f"{name}.key"),
                 "-out", f"{name}.crt", "-subj", f"/CN=Test {name}", "-days", "2")
    broker = KeyPair(folder / "broker.crt", folder / "broker.key")
    _sign(folder, broker, "localhost", "ca", "server_ext", names=BROKER_NAMES)
    wrong_name = KeyPair(folder / "wrong-name.crt", folder / "wrong-name.key")
    _sign(folder, wrong_name, "broker.elsewhere.example", "ca", "server_ext", names="DNS:broker.elsewhere.example")
    cn_only = KeyPair(folder / "cn-only.crt", folder / "cn-only.key")
    _sign(folder, cn_only, "localhost", "ca", "server_ext_no_names")
    return Pki(folder, folder / "ca.crt", folder / "other-ca.crt", broker, wrong_name, cn_only, _expired(folder))


def _expired(folder: Path) -> KeyPair:
    pair = KeyPair(folder / "expired.crt", folder / "expired.key")
    _openssl(folder, "req", "-new", *_new_key(pair.key), "-out", "expired.csr", "-subj", "/CN=localhost",
             names=BROKER_NAMES)
    (folder / "index.txt").write_text("")
    (folder / "serial").write_text("01\n")
    now = datetime.now(UTC)
    start, end = ((now - timedelta(days=days)).strftime("%Y%m%d%H%M%SZ") for days in (2, 1))
    _openssl(folder, "ca", "-batch", "-notext", "-extensions", "server_ext", "-cert", "ca.crt", "-keyfile", "ca.key",
             "-in", "expired.csr", "-out", pair.cert.name, "-startdate", start, "-enddate", end, names=BROKER_NAMES)
    return pair


def _sign(folder: Path, pair: KeyPair, common_name: str, issuer: str, extensions: str, names: str = "") -> None:
    _openssl(folder, "req", "-x509", "-extensions", extensions, "-CA", f"{issuer}.crt", "-CAkey", f"{issuer}.key",
             *_new_key(pair.key), "-out", str(pair.cert), "-subj", f"/CN={common_name}", "-days", "2", names=names)


def _new_key(key: Path) -> list[str]:
    return ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", str(key)]


def _openssl(folder: Path, command: str, *args: str, names: str = "") -> None:
    assert OPENSSL is not None
    # SAN is read by the config only in server_ext; it must be set (and non-empty) whenever the config is.
    env = {**os.environ, "SAN": names or "DNS:unused"}
    done = subprocess.run([OPENSSL, command, "-config", "openssl.cnf", *args], cwd=folder, env=env,
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"openssl {command} failed: {done.stderr.strip()}")
