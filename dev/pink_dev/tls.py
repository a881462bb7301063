"""A private certificate authority for the dev cluster's TLS (nginx, and the CLI that trusts it).

Made with ``trustme``: a CA certificate (its key stays in memory and is never written) and one
server certificate for loopback names, which nginx serves and clients verify with ``ca.pem``.
"""

from __future__ import annotations

import dataclasses
import datetime
import os
from pathlib import Path
from typing import Sequence

import trustme

from .process import write_private

#: Validity of the server certificate: 825 days, the most that macOS and iOS accept.
SERVER_CERT_DAYS = 825


@dataclasses.dataclass(frozen=True)
class DevCA:
    """Files written by :func:`make_dev_ca`."""

    folder: Path
    ca_cert: Path
    cert: Path
    key: Path


def make_dev_ca(folder: str | os.PathLike[str], hosts: Sequence[str] = ("127.0.0.1", "localhost")) -> DevCA:
    """A private CA (ca.pem) and a certificate for ``hosts`` (server.pem, key server.key).

    ``hosts`` are IP addresses or DNS names; all go in the subjectAltName, the first is also
    the common name. Existing files are kept, so calling it again is cheap and does not
    invalidate clients that already trust ca.pem.
    """
    out = Path(folder).resolve()
    out.mkdir(parents=True, exist_ok=True)
    ca = DevCA(out, out / "ca.pem", out / "server.pem", out / "server.key")
    if all(p.exists() for p in (ca.ca_cert, ca.cert, ca.key)):
        return ca
    authority = trustme.CA(organization_name="PINK development CA")
    expires = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=SERVER_CERT_DAYS)
    server = authority.issue_cert(*hosts, common_name=hosts[0], not_after=expires)
    write_private(ca.key, server.private_key_pem.bytes().decode())
    write_private(ca.cert, server.cert_chain_pems[0].bytes().decode(), 0o644)
    write_private(ca.ca_cert, authority.cert_pem.bytes().decode(), 0o644)
    return ca
