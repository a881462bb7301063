"""PINK core: what the web servers and the workers both use.

The job model and its state table, config, the etcd layer and the store on it, leases, retries,
placement and queue planning, and the held-layer index. Each role has its own package:
``webapp`` (web servers), ``gpu_worker`` (workers), ``pink_client`` (the ``pink`` command) and,
for developers only, ``pink_dev`` (in ``dev/``: real parts started locally for tests and bench).
"""

__version__ = "0.1.0"
