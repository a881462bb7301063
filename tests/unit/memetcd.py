"""An in-memory etcd for unit tests of the store, the views and the janitor.

It stands in for etcd's gRPC services only: the real ``etcd3`` client builds and reads the same
protobuf messages it sends to a real member, and the real :class:`pink.store.Store` runs on top
of it, so transactions, compares, revisions and leases behave as on etcd (one member, no
network). Leases never expire by time: a test ends one with :meth:`MemEtcd.expire`.
"""

from __future__ import annotations

import itertools
import threading

from pink.config import EtcdConfig
from pink.etcd import EtcdClient, etcd3, etcdrpc
from etcd3.etcdrpc.kv_pb2 import KeyValue  # noqa: E402 - after pink.etcd sets up protobuf

_COMPARE = {
    etcdrpc.Compare.EQUAL: lambda a, b: a == b,
    etcdrpc.Compare.GREATER: lambda a, b: a > b,
    etcdrpc.Compare.LESS: lambda a, b: a < b,
    etcdrpc.Compare.NOT_EQUAL: lambda a, b: a != b,
}


class MemEtcd:
    """Keys, revisions and leases of one etcd member; answers the KV and Lease RPCs."""

    def __init__(self) -> None:
        self.kvs: dict[bytes, etcdrpc.KeyValue] = {}
        self.leases: dict[int, int] = {}  # id -> TTL
        self.revision = 1
        self._lease_ids = itertools.count(0x1000)
        self._lock = threading.RLock()

    # ----- helpers --------------------------------------------------------------------------
    def _header(self) -> etcdrpc.ResponseHeader:
        return etcdrpc.ResponseHeader(revision=self.revision)

    def _range_keys(self, key: bytes, range_end: bytes) -> list[bytes]:
        if not range_end:
            return [key] if key in self.kvs else []
        return sorted(k for k in self.kvs if k >= key and (range_end == b"\0" or k < range_end))

    def _put(self, req: etcdrpc.PutRequest, bump: bool = True) -> etcdrpc.PutResponse:
        if req.lease and req.lease not in self.leases:
            raise _rpc_error("etcdserver: requested lease not found")
        self.revision += bump
        old = self.kvs.get(req.key)
        self.kvs[req.key] = KeyValue(
            key=req.key, value=req.value, lease=req.lease, mod_revision=self.revision,
            create_revision=old.create_revision if old else self.revision,
            version=(old.version + 1) if old else 1,
        )
        return etcdrpc.PutResponse(header=self._header())

    def _delete(self, req: etcdrpc.DeleteRangeRequest, bump: bool = True) -> etcdrpc.DeleteRangeResponse:
        keys = self._range_keys(req.key, req.range_end)
        if keys:
            self.revision += bump
        for k in keys:
            del self.kvs[k]
        return etcdrpc.DeleteRangeResponse(header=self._header(), deleted=len(keys))

    def _compare(self, c: etcdrpc.Compare) -> bool:
        kv = self.kvs.get(c.key)
        target = etcdrpc.Compare.CompareTarget
        if c.target == target.VALUE:
            actual, wanted = (kv.value if kv else None), c.value
            if actual is None:
                return False
        elif c.target == target.VERSION:
            actual, wanted = (kv.version if kv else 0), c.version
        elif c.target == target.MOD:
            actual, wanted = (kv.mod_revision if kv else 0), c.mod_revision
        else:
            actual, wanted = (kv.create_revision if kv else 0), c.create_revision
        return _COMPARE[c.result](actual, wanted)

    # ----- the RPCs the client calls --------------------------------------------------------
    def Range(self, req: etcdrpc.RangeRequest, *_, **__) -> etcdrpc.RangeResponse:
        with self._lock:
            keys = self._range_keys(req.key, req.range_end)
            if req.sort_order == etcdrpc.RangeRequest.DESCEND:
                keys.reverse()
            count = len(keys)
            kvs = [self.kvs[k] for k in (keys[:req.limit] if req.limit else keys)]
            if req.keys_only:
                kvs = [KeyValue(key=kv.key, mod_revision=kv.mod_revision, version=kv.version,
                                        create_revision=kv.create_revision, lease=kv.lease) for kv in kvs]
            return etcdrpc.RangeResponse(header=self._header(), kvs=kvs, count=count, more=len(kvs) < count)

    def Put(self, req: etcdrpc.PutRequest, *_, **__) -> etcdrpc.PutResponse:
        with self._lock:
            return self._put(req)

    def DeleteRange(self, req: etcdrpc.DeleteRangeRequest, *_, **__) -> etcdrpc.DeleteRangeResponse:
        with self._lock:
            return self._delete(req)

    def Txn(self, req: etcdrpc.TxnRequest, *_, **__) -> etcdrpc.TxnResponse:
        with self._lock:
            ok = all(self._compare(c) for c in req.compare)
            ops = req.success if ok else req.failure
            # One transaction is one revision, however many keys it writes.
            self.revision += any(op.WhichOneof("request") != "request_range" for op in ops)
            responses = []
            for op in ops:
                kind = op.WhichOneof("request")
                if kind == "request_put":
                    responses.append(etcdrpc.ResponseOp(response_put=self._put(op.request_put, bump=False)))
                elif kind == "request_delete_range":
                    responses.append(etcdrpc.ResponseOp(
                        response_delete_range=self._delete(op.request_delete_range, bump=False)))
                else:
                    responses.append(etcdrpc.ResponseOp(response_range=self.Range(op.request_range)))
            return etcdrpc.TxnResponse(header=self._header(), succeeded=ok, responses=responses)

    def LeaseGrant(self, req: etcdrpc.LeaseGrantRequest, *_, **__) -> etcdrpc.LeaseGrantResponse:
        with self._lock:
            lease_id = next(self._lease_ids)
            self.leases[lease_id] = req.TTL
            return etcdrpc.LeaseGrantResponse(header=self._header(), ID=lease_id, TTL=req.TTL)

    def LeaseKeepAlive(self, requests, *_, **__):
        for req in requests:
            with self._lock:
                ttl = self.leases.get(req.ID, 0)
            yield etcdrpc.LeaseKeepAliveResponse(header=self._header(), ID=req.ID, TTL=ttl)

    def LeaseRevoke(self, req: etcdrpc.LeaseRevokeRequest, *_, **__) -> etcdrpc.LeaseRevokeResponse:
        self.expire(req.ID)
        return etcdrpc.LeaseRevokeResponse(header=self._header())

    # ----- for tests --------------------------------------------------------------------------
    def expire(self, lease_id: int) -> None:
        """End a lease as etcd does when its TTL runs out: its keys go with it."""
        with self._lock:
            self.leases.pop(lease_id, None)
            for key in [k for k, kv in self.kvs.items() if kv.lease == lease_id]:
                self._delete(etcdrpc.DeleteRangeRequest(key=key))


def _rpc_error(details: str) -> Exception:
    import grpc

    class Refused(grpc.RpcError):
        def code(self):  # noqa: ANN201 - grpc's interface
            return grpc.StatusCode.NOT_FOUND

        def details(self):  # noqa: ANN201
            return details

    return Refused(details)


class MemEtcdClient(EtcdClient):
    """pink's etcd client, wired to a :class:`MemEtcd` instead of a member over gRPC."""

    def __init__(self, mem: MemEtcd | None = None, prefix: str = "/pink") -> None:
        super().__init__(EtcdConfig(endpoints=("127.0.0.1:2379",), prefix=prefix))
        self.mem = mem or MemEtcd()
        self._etcd3 = etcd3.client()  # a lazy channel, never used: its stubs are replaced
        self._etcd3.kvstub = self.mem
        self._etcd3.leasestub = self.mem

    def _client(self):  # noqa: ANN202 - EtcdClient's
        return 0, self._etcd3

    def watch_prefix(self, prefix, on_event):  # noqa: ANN001, ANN201 - EtcdClient's
        return _NoWatch()

    def list_and_watch(self, start, prefix, on_list, on_events):  # noqa: ANN001, ANN201 - EtcdClient's
        return _NoWatch()  # so a QueueMirror never lists: the store reads all of queue/

    def close(self) -> None:
        self._etcd3.close()


class _NoWatch:
    def cancel(self) -> None:
        pass
