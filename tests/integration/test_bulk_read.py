"""Bulk reads (archives of ``BULK_BYTES`` or more) through OpenSSH's ``ssh`` client and the
worker's transfer gate on a real sshd: the bytes from an offset, in whole MiBs, under the
cipher list of ``web.ssh_ciphers``."""

from __future__ import annotations

import os

import pytest

from pink.errors import WorkerUnavailable
from pink.model import WorkerInfo
from webapp.transfer import BULK_BYTES, CHUNK, WorkerLinks

JOB = "0123456789abcdef0123"


def _link(server, **kwargs):
    links = WorkerLinks(str(server.client_key), str(server.known_hosts), **kwargs)
    assert links.ssh_binary, "these tests need OpenSSH's client"
    return links.get(WorkerInfo(name="w1", ssh_host=server.host, ssh_port=server.port,
                                ssh_user=server.user, inbox=str(server.inbox), outbox=str(server.outbox)))


def test_a_bulk_read_comes_in_whole_mib_from_its_offset(sshd):
    server = sshd()
    data = os.urandom(3 * CHUNK + 12345)
    (server.outbox / f"{JOB}.tar.zst").write_bytes(data)
    link = _link(server)
    chunks = list(link.read(JOB, "archive", 0, length=BULK_BYTES))
    assert b"".join(chunks) == data
    assert [len(c) for c in chunks] == [CHUNK, CHUNK, CHUNK, 12345]
    assert b"".join(link.read(JOB, "archive", CHUNK + 5, length=BULK_BYTES)) == data[CHUNK + 5:]


def test_the_configured_ciphers_are_offered_and_one_the_worker_refuses_fails_clearly(sshd):
    server = sshd()
    (server.outbox / f"{JOB}.tar.zst").write_bytes(b"x" * 1000)
    link = _link(server, ciphers="aes256-gcm@openssh.com")
    assert "Ciphers=aes256-gcm@openssh.com" in link._ssh_argv("true")
    assert b"".join(link.read(JOB, "archive", 0, length=BULK_BYTES)) == b"x" * 1000
    refused = _link(server, ciphers="3des-cbc")  # OpenSSH's sshd no longer offers it by default
    with pytest.raises(WorkerUnavailable, match="SSH to worker w1"):
        list(refused.read(JOB, "archive", 0, length=BULK_BYTES))
