"""The web tier of the dev cluster: gunicorn serving PINK's web app, nginx with TLS in front.

Gunicorn runs gthread workers, whose threads carry the long streams; nginx passes uploads and
downloads through without buffering them, and skips a web server that fails.
"""

from __future__ import annotations

import os
import socket
import ssl
import subprocess
import sys
from pathlib import Path
from typing import Any, Mapping, Sequence

import requests

from pink import config as pink_config

from .process import Service, ServiceError, binary, current_user


class Nginx(Service):
    """nginx as the TLS load balancer in front of one or more gunicorn web servers."""

    name = "nginx"
    marker = "nginx"

    def __init__(
        self,
        base_dir: str | os.PathLike[str],
        *,
        https_port: int,
        upstreams: Sequence[str | int],
        cert: str | os.PathLike[str],
        key: str | os.PathLike[str],
        ca_cert: str | os.PathLike[str] | None = None,
        max_upload_bytes: int = pink_config.WebConfig.max_upload_bytes,
        max_body_bytes: int = pink_config.WebConfig.max_body_bytes,
        host: str = "127.0.0.1",
        max_fails: int = 1,
        fail_timeout_s: int = 10,
        stream_timeout_s: int = 3600,
        **kwargs: Any,
    ) -> None:
        super().__init__(base_dir, **kwargs)
        self.https_port = https_port
        self.upstreams = [f"127.0.0.1:{u}" if isinstance(u, int) else str(u) for u in upstreams]
        self.cert = Path(cert).resolve()
        self.key = Path(key).resolve()
        self.ca_cert = Path(ca_cert).resolve() if ca_cert else None
        self.max_upload_bytes = max_upload_bytes
        self.max_body_bytes = max_body_bytes
        self.host = host
        self.max_fails = max_fails
        self.fail_timeout_s = fail_timeout_s
        self.stream_timeout_s = stream_timeout_s
        self.conf_path = self.base_dir / "nginx.conf"
        self.error_log = self.base_dir / "error.log"

    @property
    def url(self) -> str:
        return f"https://{self.host}:{self.https_port}"

    def config_text(self) -> str:
        d = self.base_dir
        servers = "\n".join(
            f"        server {u} max_fails={self.max_fails} fail_timeout={self.fail_timeout_s}s;"
            for u in self.upstreams
        )
        # Run workers as the invoking user: their temp paths live in this private folder
        # (pytest's tmp dirs are 0700), and this launcher only serves loopback.
        user_line = f"user {current_user()};" if os.getuid() == 0 else ""
        return f"""# Written by pink_dev: TLS load balancer for PINK's web servers.
{user_line}
worker_processes 2;
pid {d}/nginx.pid;
error_log {self.error_log} info;
events {{
    worker_connections 1024;
}}
http {{
    access_log {d}/access.log;
    client_body_temp_path {d}/tmp/client;
    proxy_temp_path {d}/tmp/proxy;
    fastcgi_temp_path {d}/tmp/fastcgi;
    uwsgi_temp_path {d}/tmp/uwsgi;
    scgi_temp_path {d}/tmp/scgi;
    server_tokens off;
    # Login attempts (POSTs of the form and of API tokens) per client address: a flood guard;
    # the web servers count failures per user and per address behind it.
    map $request_method $pink_login_key {{
        POST $binary_remote_addr;
        default "";
    }}
    limit_req_zone $pink_login_key zone=pink_login:10m rate=60r/m;

    upstream pink_web {{
        # Passive health checks: a server that fails is skipped for fail_timeout.
{servers}
        keepalive 32;
    }}

    server {{
        listen {self.host}:{self.https_port} ssl;
        server_name _;
        ssl_certificate {self.cert};
        ssl_certificate_key {self.key};
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_session_cache shared:pinkssl:4m;
        # Browsers that came over HTTPS once never try plain HTTP again.
        add_header Strict-Transport-Security "max-age=31536000" always;

        # Only uploads (images: POST /api/v1/jobs, inputs: POST /api/v1/inputs) may be big:
        # streamed to gunicorn, never spooled here. Every other body is as small as the web servers' web.max_body_bytes.
        client_max_body_size {self.max_body_bytes};
        # A job spec header (Pink-Job-Spec) may carry up to 32 KiB.
        large_client_header_buffers 4 40k;
        proxy_request_buffering off;
        proxy_buffering off;
        # Unbuffered, nginx moves at most one buffer per read: 1 MiB for bodies and 256 KiB for
        # responses instead of the default 16 KiB and 4 KiB take far fewer system calls per GiB.
        # (proxy_buffers only satisfy nginx's size checks; unbuffered responses do not use them.)
        client_body_buffer_size 1m;
        proxy_buffer_size 256k;
        proxy_buffers 4 256k;
        proxy_busy_buffers_size 512k;
        proxy_max_temp_file_size 0;

        proxy_http_version 1.1;
        proxy_set_header Connection "";
        proxy_set_header Host $http_host;
        proxy_set_header X-Real-IP $remote_addr;
        proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
        proxy_set_header X-Forwarded-Proto $scheme;
        proxy_connect_timeout 5s;
        # Long uploads, downloads and log streams (?follow=1).
        proxy_read_timeout {self.stream_timeout_s}s;
        proxy_send_timeout {self.stream_timeout_s}s;
        # A dead web server is skipped; requests already sent are never replayed
        # (nginx does not retry non-idempotent requests).
        proxy_next_upstream error timeout http_502 http_503;
        proxy_next_upstream_tries 3;
        limit_req_status 429;
        # nginx's own refusals answer in the API's JSON.
        error_page 413 @too_big;
        error_page 429 @too_many;

        location / {{
            proxy_pass http://pink_web;
        }}
        # Metrics are for Prometheus, which scrapes each web server on its own port (docs/metrics.md).
        location = /metrics {{
            return 404;
        }}
        location = /api/v1/jobs {{
            client_max_body_size {self.max_upload_bytes};
            proxy_pass http://pink_web;
        }}
        location = /api/v1/inputs {{
            client_max_body_size {self.max_upload_bytes};
            proxy_pass http://pink_web;
        }}
        location ~ ^/(login|api/v1/tokens)$ {{
            limit_req zone=pink_login burst=30 nodelay;
            proxy_pass http://pink_web;
        }}
        location @too_big {{
            default_type application/json;
            return 413 '{{"error": "the request body is too large"}}';
        }}
        location @too_many {{
            default_type application/json;
            add_header Retry-After 10 always;
            return 429 '{{"error": "too many login attempts from this address; try again in a minute"}}';
        }}
    }}
}}
"""

    def _base_cmd(self) -> list[str]:
        return [binary("nginx", "/usr/sbin/nginx"), "-c", str(self.conf_path), "-p", f"{self.base_dir}/",
                "-e", str(self.error_log)]

    def prepare(self) -> None:
        super().prepare()
        for sub in ("client", "proxy", "fastcgi", "uwsgi", "scgi"):
            (self.base_dir / "tmp" / sub).mkdir(parents=True, exist_ok=True)
        self.conf_path.write_text(self.config_text())
        check = subprocess.run([*self._base_cmd(), "-t", "-q"], capture_output=True, text=True, timeout=30)
        if check.returncode != 0:
            raise ServiceError(f"nginx -t rejected {self.conf_path}: {check.stderr.strip()}")

    def command(self) -> list[str]:
        return [*self._base_cmd(), "-g", "daemon off;"]

    def is_ready(self) -> bool:
        context = ssl.create_default_context(cafile=str(self.ca_cert)) if self.ca_cert else ssl._create_unverified_context()  # noqa: S323
        with socket.create_connection((self.host, self.https_port), timeout=2) as raw:
            with context.wrap_socket(raw, server_hostname=self.host):
                return True


class Gunicorn(Service):
    """A PINK web server: gunicorn (gthread) serving ``webapp.wsgi:app``."""

    name = "gunicorn"
    marker = "gunicorn"

    def __init__(
        self,
        base_dir: str | os.PathLike[str],
        *,
        port: int,
        config_path: str | os.PathLike[str],
        workers: int = 2,
        threads: int = 16,
        app: str = "webapp.wsgi:app",
        host: str = "127.0.0.1",
        graceful_timeout_s: int = 10,
        env: Mapping[str, str] | None = None,
        **kwargs: Any,
    ) -> None:
        self.config_path = Path(config_path).resolve()
        super().__init__(base_dir, env={"PINK_CONFIG": str(self.config_path), **(env or {})}, **kwargs)
        self.port = port
        self.host = host
        self.workers = workers
        self.threads = threads
        self.app = app
        self.graceful_timeout_s = graceful_timeout_s
        self.conf_path = self.base_dir / "gunicorn.conf.py"

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def prepare(self) -> None:
        super().prepare()
        settings = {
            "bind": f"{self.host}:{self.port}",
            "workers": self.workers,
            # Threads, not processes, carry the long streams (uploads, downloads, follow).
            "worker_class": "gthread",
            "threads": self.threads,
            # The heartbeat of a worker's main loop, not a request limit: streams may last
            # hours in their threads while the main loop keeps beating.
            "timeout": 120,
            "graceful_timeout": self.graceful_timeout_s,
            # Longer than nginx's upstream keepalive so nginx closes idle connections first.
            "keepalive": 75,
            # A job spec header (Pink-Job-Spec) may carry up to 32 KiB.
            "limit_request_field_size": 40960,
            "pidfile": str(self.base_dir / "gunicorn.pid"),
            "accesslog": str(self.base_dir / "access.log"),
            "errorlog": "-",
            "loglevel": "info",
            # nginx on loopback sets X-Forwarded-For/Proto; trust it and nobody else.
            "forwarded_allow_ips": "127.0.0.1",
            "proc_name": f"pink-web-{self.port}",
        }
        lines = ["# Written by pink_dev."] + [f"{k} = {v!r}" for k, v in settings.items()]
        # /metrics merges the counters of all gunicorn processes (pink/gunicorn_metrics.py).
        lines += ["import os", f"os.environ['PROMETHEUS_MULTIPROC_DIR'] = {str(self.base_dir / 'metrics')!r}",
                  "from pink.gunicorn_metrics import child_exit, on_starting  # noqa: E402,F401"]
        self.conf_path.write_text("\n".join(lines) + "\n")

    def command(self) -> list[str]:
        return [sys.executable, "-m", "gunicorn", "-c", str(self.conf_path), self.app]

    def is_ready(self) -> bool:
        # Any HTTP answer means gunicorn serves the app (healthz may say 503 while etcd is
        # down; that is the app's business, not the launcher's).
        requests.get(f"{self.url}/healthz", timeout=2)
        return True
