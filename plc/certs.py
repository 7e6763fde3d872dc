"""X.509 certificates for the PLC links (`cryptography`): the OPC UA application certificate, and
a small CA with server/client certificates for TLS (MQTT brokers, tests, lab setups).

`edge-inspect certs` calls `write_application_certificate`: an RSA-2048 / SHA-256 self-signed
certificate with the application URI in its subjectAltName, as the Basic256Sha256 security
policy requires, written as DER (what OPC UA exchanges) and PEM, with the private key in PEM
(mode 0600).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import socket
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from edge.errors import EdgeInspectError


@dataclass(frozen=True)
class KeyPair:
    key: rsa.RSAPrivateKey
    cert: x509.Certificate

    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def cert_der(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.DER)

    def key_pem(self) -> bytes:
        return self.key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
        )


def _name(cn: str, org: str = "edge-inspect") -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn), x509.NameAttribute(NameOID.ORGANIZATION_NAME, org)])


def _san(dns: list[str], ips: list[str], uri: str | None) -> x509.SubjectAlternativeName:
    names: list[x509.GeneralName] = []
    if uri:
        names.append(x509.UniformResourceIdentifier(uri))
    names += [x509.DNSName(d) for d in dns]
    names += [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
    return x509.SubjectAlternativeName(names)


def _validity(days: int) -> tuple[dt.datetime, dt.datetime]:
    now = dt.datetime.now(dt.timezone.utc)
    return now - dt.timedelta(minutes=5), now + dt.timedelta(days=days)


def make_ca(cn: str = "edge-inspect test CA", days: int = 3650) -> KeyPair:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    start, end = _validity(days)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(_name(cn))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return KeyPair(key, cert)


def make_leaf(
    ca: KeyPair | None,
    cn: str,
    dns: list[str] | None = None,
    ips: list[str] | None = None,
    uri: str | None = None,
    days: int = 825,
    key_size: int = 2048,
) -> KeyPair:
    """A server+client certificate, signed by `ca` (or self-signed when `ca` is None)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=key_size)
    start, end = _validity(days)
    issuer = ca.cert.subject if ca else _name(cn)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            # digitalSignature, nonRepudiation (content_commitment), keyEncipherment, dataEncipherment
            x509.KeyUsage(True, True, True, True, False, ca is None, False, False, False),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False
        )
        .add_extension(_san(dns or [], ips or [], uri), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    signer = ca.key if ca else key
    return KeyPair(key, builder.sign(signer, hashes.SHA256()))


def make_application_certificate(application_uri: str, hostname: str | None = None, days: int = 825) -> KeyPair:
    """A self-signed OPC UA application instance certificate (Basic256Sha256-compliant)."""
    host = hostname or socket.gethostname()
    return make_leaf(None, f"edge-inspect@{host}", dns=sorted({host, "localhost"}), ips=["127.0.0.1"],
                     uri=application_uri, days=days)


def _write(path: Path, data: bytes, private: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if private else 0o644)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.replace(tmp, path)


def write_keypair(pair: KeyPair, cert_path: Path, key_path: Path) -> None:
    """Write the certificate (DER for `.der`, PEM otherwise) and its key (PEM, mode 0600)."""
    _write(cert_path, pair.cert_der() if cert_path.suffix.lower() == ".der" else pair.cert_pem())
    _write(key_path, pair.key_pem(), private=True)


def write_application_certificate(
    out_dir: Path, application_uri: str, hostname: str | None = None, days: int = 825, force: bool = False
) -> dict[str, Path]:
    """Create `server_cert.der`, `server_cert.pem` and `server_key.pem` in `out_dir` (and `trusted/`)."""
    paths = {
        "cert_der": out_dir / "server_cert.der",
        "cert_pem": out_dir / "server_cert.pem",
        "key": out_dir / "server_key.pem",
        "trusted": out_dir / "trusted",
    }
    if paths["key"].exists() and not force:
        raise EdgeInspectError(f"{paths['key']} exists; pass --force to replace the application certificate")
    pair = make_application_certificate(application_uri, hostname, days)
    write_keypair(pair, paths["cert_der"], paths["key"])
    _write(paths["cert_pem"], pair.cert_pem())
    paths["trusted"].mkdir(parents=True, exist_ok=True)
    return paths
