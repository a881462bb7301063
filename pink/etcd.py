"""The raw etcd layer: a client per endpoint with failover, errors turned into our own types.

Everything above this module speaks in :class:`~pink.errors.StoreUnavailable` and plain return
values; nothing above imports grpc or etcd3 exceptions.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Callable, TypeVar

# etcd3 (last released 2020) ships protobuf modules generated for the old pure-Python runtime;
# today's protobuf refuses them unless told to use the Python implementation. Set it here,
# before the first import, so no user has to export it in their shell.
os.environ.setdefault("PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION", "python")

import warnings  # noqa: E402

with warnings.catch_warnings():
    # Its generated modules use protobuf calls that today's protobuf marks deprecated.
    warnings.simplefilter("ignore", DeprecationWarning)
    import etcd3  # noqa: E402
    import etcd3.exceptions  # noqa: E402
    import etcd3.utils  # noqa: E402
    from etcd3 import etcdrpc  # noqa: E402
import grpc  # noqa: E402

from .config import EtcdConfig  # noqa: E402
from .errors import ConfigError, StoreError, StoreUnavailable  # noqa: E402
from .metrics import ETCD_ERRORS  # noqa: E402
from .retry import Retry  # noqa: E402

log = logging.getLogger(__name__)
T = TypeVar("T")

_TRANSIENT = (etcd3.exceptions.ConnectionFailedError, etcd3.exceptions.ConnectionTimeoutError)
#: gRPC codes that mean "this endpoint cannot answer now"; others are refusals of the request.
_TRANSIENT_CODES = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED}
#: etcd 3.4 answers UNKNOWN with these details when a member that lost quorum gives up on a
#: linearizable read (its own context ran out), instead of a gRPC code of its own.
_TRANSIENT_DETAILS = ("context deadline exceeded", "context canceled")


def is_transient_rpc_error(exc: grpc.RpcError) -> bool:
    """True when the endpoint could not answer now (try another, later); False for a refusal."""
    if exc.code() in _TRANSIENT_CODES:
        return True
    return exc.code() is grpc.StatusCode.UNKNOWN and (exc.details() or "") in _TRANSIENT_DETAILS

transactions = etcd3.Transactions()  # compare/op builders for the store layer


def prefix_end(prefix: bytes) -> bytes:
    """The end of a prefix range (etcd's: the prefix with its last byte incremented)."""
    return prefix[:-1] + bytes([prefix[-1] + 1])


class EtcdClient:
    """Talks to one of several etcd endpoints, moving to the next one when a call fails.

    ``call`` retries transient failures on the next endpoint until ``retry``'s deadline; then
    it raises :class:`StoreUnavailable` (no quorum, every member down, or a partition).
    """

    def __init__(self, cfg: EtcdConfig, retry: Retry | None = None) -> None:
        self.cfg = cfg
        self.retry = retry or Retry(deadline_s=max(2.0, cfg.timeout_s))
        self._endpoints = [self._parse(e) for e in cfg.endpoints]
        self._clients: dict[int, etcd3.Etcd3Client] = {}
        self._current = 0
        self._lock = threading.Lock()

    @staticmethod
    def _parse(endpoint: str) -> tuple[str, int]:
        ep = endpoint.removeprefix("https://").removeprefix("http://").rstrip("/")
        host, sep, port = ep.rpartition(":")
        if not sep or not port.isdigit():
            raise ConfigError(f"etcd endpoint {endpoint!r} must be host:port")
        return host.strip("[]"), int(port)

    def _client(self) -> tuple[int, etcd3.Etcd3Client]:
        with self._lock:
            idx = self._current
            client = self._clients.get(idx)
            if client is None:
                host, port = self._endpoints[idx]
                tls = {}
                if self.cfg.ca_cert:
                    tls["ca_cert"] = self.cfg.ca_cert
                    if self.cfg.cert:
                        tls.update(cert_cert=self.cfg.cert, cert_key=self.cfg.key)
                client = etcd3.client(host=host, port=port, timeout=self.cfg.timeout_s, **tls)
                self._clients[idx] = client
            return idx, client

    def _failover(self, idx: int) -> None:
        with self._lock:
            if self._current == idx and len(self._endpoints) > 1:
                self._current = (idx + 1) % len(self._endpoints)
                log.info("etcd endpoint %s:%s failed; trying %s:%s", *self._endpoints[idx],
                         *self._endpoints[self._current])

    def call(self, fn: Callable[[etcd3.Etcd3Client], T], what: str = "etcd call") -> T:
        def once() -> T:
            idx, client = self._client()
            try:
                return fn(client)
            except (*_TRANSIENT, grpc.RpcError) as exc:
                if isinstance(exc, grpc.RpcError) and not is_transient_rpc_error(exc):
                    ETCD_ERRORS.labels(kind="refused").inc()
                    raise StoreError(f"etcd refused {what}: {exc.code().name}: {exc.details()}") from None
                ETCD_ERRORS.labels(kind="unavailable").inc()
                self._failover(idx)
                raise StoreUnavailable(
                    f"etcd is unavailable ({what}: {type(exc).__name__}); "
                    "check that a majority of etcd members is up"
                ) from exc

        return self.retry(once, what)

    def watch_prefix(self, prefix: str, on_event: Callable[[], None]) -> "PrefixWatch":
        return PrefixWatch(self, prefix, on_event)

    def list_and_watch(self, start: str, prefix: str, on_list: Callable[[list, int], None],
                       on_events: Callable[[list], None]) -> "ListWatch":
        return ListWatch(self, start, prefix, on_list, on_events)

    def close(self) -> None:
        with self._lock:
            for client in self._clients.values():
                client.close()
            self._clients.clear()


class PrefixWatch:
    """Calls ``on_event()`` whenever a key under ``prefix`` changes, until ``cancel()``.

    Our own loop on the raw gRPC stream instead of etcd3's ``Watcher``, whose thread spins
    without pause (and cannot be stopped) while its endpoint is down. This one moves to the next
    endpoint, backs off up to 5 s, and after each reconnect calls ``on_event()`` once, since
    changes may have been missed: watchers re-read the store anyway.
    """

    def __init__(self, etcd: EtcdClient, prefix: str, on_event: Callable[[], None]) -> None:
        self._etcd = etcd
        self._key = prefix.encode()
        self._on_event = on_event
        self._stopped = threading.Event()
        self._call = None
        self._thread = threading.Thread(target=self._run, name=f"watch {prefix}", daemon=True)
        self._thread.start()

    def _create_request(self, client: etcd3.Etcd3Client) -> etcdrpc.WatchCreateRequest:
        """What the (re)made stream watches, from which revision (0: from now)."""
        return etcdrpc.WatchCreateRequest(key=self._key, range_end=etcd3.utils.increment_last_byte(self._key))

    def _handle(self, response: etcdrpc.WatchResponse, first: bool) -> bool:
        """One response of the stream; False ends the stream (it is made again)."""
        if response.created and not first:
            self._on_event()  # reconnected: whatever changed meanwhile is unseen
        if response.events:
            self._on_event()
        return True

    def _requests(self, create: etcdrpc.WatchCreateRequest, done: threading.Event):
        yield etcdrpc.WatchRequest(create_request=create)
        done.wait()  # keep the request side open while the stream lives

    def _run(self) -> None:
        delay = 0.1
        first = True
        while not self._stopped.is_set():
            idx, client = self._etcd._client()
            done = threading.Event()
            try:
                create = self._create_request(client)
                self._call = etcdrpc.WatchStub(client.channel).Watch(self._requests(create, done))
                for response in self._call:
                    if not self._handle(response, first):
                        self._call.cancel()
                        break
                    first = False
                    delay = 0.1
            except (*_TRANSIENT, grpc.RpcError):
                if self._stopped.is_set():
                    break
                self._etcd._failover(idx)
            finally:
                done.set()
            self._stopped.wait(delay)
            delay = min(delay * 2, 5.0)

    def cancel(self) -> None:
        self._stopped.set()
        if self._call is not None:
            self._call.cancel()


class ListWatch(PrefixWatch):
    """Lists the keys from ``start`` to the end of ``prefix`` (``on_list(kvs, revision)``), then
    hands every change to them after that listing to ``on_events(events)`` in order, one response
    (whole revisions) at a time. After a reconnect, or when etcd has compacted away the revisions
    it would resume from, it lists again: ``on_list`` replaces whatever was built from the events
    before. ``start`` is ``prefix`` itself or a key before it (with nothing else in between)."""

    def __init__(self, etcd: EtcdClient, start: str, prefix: str, on_list: Callable[[list, int], None],
                 on_events: Callable[[list], None]) -> None:
        self._start = start.encode()
        self._on_list = on_list
        self._on_events = on_events
        super().__init__(etcd, prefix, lambda: None)

    def _create_request(self, client: etcd3.Etcd3Client) -> etcdrpc.WatchCreateRequest:
        end = etcd3.utils.increment_last_byte(self._key)
        listing = client.get_range_response(self._start, end)
        self._on_list(list(listing.kvs), listing.header.revision)
        return etcdrpc.WatchCreateRequest(key=self._start, range_end=end, start_revision=listing.header.revision + 1)

    def _handle(self, response: etcdrpc.WatchResponse, first: bool) -> bool:
        if response.canceled or response.compact_revision:
            log.info("watch of %s ended (compacted at %d): listing it again",
                     self._key.decode(), response.compact_revision)
            return False
        if response.events:
            self._on_events(list(response.events))
        return True
