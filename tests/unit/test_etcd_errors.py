"""Which etcd answers mean "this endpoint cannot answer now" (retry elsewhere, then 503) and
which are refusals of the request (an error)."""

from __future__ import annotations

import grpc
import pytest

from pink.etcd import is_transient_rpc_error


class Answer(grpc.RpcError):
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        self._code, self._details = code, details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details


@pytest.mark.parametrize("code,details,transient", [
    (grpc.StatusCode.UNAVAILABLE, "etcdserver: request timed out", True),
    (grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded", True),
    # etcd 3.4 without quorum: a linearizable read gives up with its own context's error
    (grpc.StatusCode.UNKNOWN, "context deadline exceeded", True),
    (grpc.StatusCode.UNKNOWN, "etcdserver: some other failure", False),
    (grpc.StatusCode.INVALID_ARGUMENT, "etcdserver: too many operations in txn request", False),
    (grpc.StatusCode.PERMISSION_DENIED, "etcdserver: permission denied", False),
])
def test_only_unanswered_requests_are_transient(code, details, transient):
    assert is_transient_rpc_error(Answer(code, details)) is transient
