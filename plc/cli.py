"""`edge-inspect certs`: the OPC UA application certificate, the trust list, password hashes."""

from __future__ import annotations

import argparse
import getpass
import shutil
import sys
from pathlib import Path
from typing import Any

from edge.errors import EdgeInspectError


def cmd_certs(args: argparse.Namespace) -> int:
    from plc.certs import write_application_certificate
    from plc.opcua_security import hash_password

    if args.hash_password:
        pw = sys.stdin.readline().rstrip("\n") if not sys.stdin.isatty() else getpass.getpass("password: ")
        if not pw:
            raise EdgeInspectError("certs --hash-password: empty password")
        print(hash_password(pw))
        return 0
    out: Path = args.out
    trusted = out / "trusted"
    if args.trust:
        for cert in args.trust:
            if not cert.is_file():
                raise EdgeInspectError(f"certs --trust: {cert} is not a file")
            trusted.mkdir(parents=True, exist_ok=True)
            shutil.copy2(cert, trusted / cert.name)
            print(f"trusted {cert.name} -> {trusted}")
        return 0
    paths = write_application_certificate(out, args.application_uri, args.hostname, args.days, args.force)
    print(f"application certificate: {paths['cert_der']} (PEM: {paths['cert_pem']})")
    print(f"private key:             {paths['key']} (mode 0600)")
    print(f"trust list (client certificates go here): {paths['trusted']}")
    print(f"application URI: {args.application_uri} (give the same in the opcua-server config)")
    return 0


def add_certs_command(sub: Any) -> None:
    p = sub.add_parser("certs", help="create the OPC UA application certificate; trust client certificates")
    p.add_argument("--out", type=Path, default=Path("pki"), help="folder (default: ./pki, the server's default)")
    p.add_argument("--application-uri", default="urn:edge-inspect:station", help="the server's application URI")
    p.add_argument("--hostname", default=None, help="host name in the certificate (default: this host's)")
    p.add_argument("--days", type=int, default=825, help="validity in days")
    p.add_argument("--force", action="store_true", help="replace an existing certificate")
    p.add_argument("--trust", type=Path, nargs="+", default=None, help="copy client certificate(s) into the trust list")
    p.add_argument("--hash-password", action="store_true", help="print a password_hash for an opcua user (stdin)")
    p.set_defaults(func=cmd_certs)
