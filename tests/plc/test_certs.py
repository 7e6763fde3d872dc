"""`edge-inspect certs`: the application certificate Basic256Sha256 needs, the trust list, password hashes."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa

from edge.cli import main
from plc.opcua_security import StationUserManager, UserConfig, hash_password


def test_certs_command_writes_a_usable_application_certificate(tmp_path: Path) -> None:
    out = tmp_path / "pki"
    assert main(["certs", "--out", str(out), "--application-uri", "urn:test:station", "--hostname", "cell-7"]) == 0
    cert = x509.load_der_x509_certificate((out / "server_cert.der").read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "urn:test:station" in san.get_values_for_type(x509.UniformResourceIdentifier)
    assert "cell-7" in san.get_values_for_type(x509.DNSName)
    ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert ku.digital_signature and ku.content_commitment and ku.key_encipherment and ku.data_encipherment
    key = cert.public_key()
    assert isinstance(key, rsa.RSAPublicKey) and key.key_size == 2048
    assert cert.signature_hash_algorithm is not None and cert.signature_hash_algorithm.name == "sha256"
    assert (out / "server_key.pem").stat().st_mode & 0o777 == 0o600
    assert (out / "trusted").is_dir()
    assert main(["certs", "--out", str(out)]) == 2  # never silently replaced
    assert main(["certs", "--out", str(out), "--force"]) == 0
    client = tmp_path / "hmi.der"
    client.write_bytes(b"not checked here")
    assert main(["certs", "--out", str(out), "--trust", str(client)]) == 0
    assert (out / "trusted" / "hmi.der").is_file()


def test_password_hash_round_trip(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO("s3cret\n"))
    assert main(["certs", "--hash-password"]) == 0
    encoded = capsys.readouterr().out.strip()
    assert encoded.startswith("pbkdf2_sha256$") and "s3cret" not in encoded
    users = StationUserManager([UserConfig(name="op", role="operator", password_hash=encoded)])
    assert users.get_user(None, "op", "s3cret") is not None
    assert users.get_user(None, "op", "wrong") is None
    assert users.get_user(None, None, None) is None  # anonymous: refused unless allowed
    assert hash_password("x") != hash_password("x")  # salted
    monkeypatch.setenv("PLC_PW", "from-env")
    env_users = StationUserManager([UserConfig(name="plc", password_env="PLC_PW")])
    assert env_users.get_user(None, "plc", "from-env") is not None
    with pytest.raises(ValueError):
        UserConfig(name="x", password="a", password_env="B")
