"""Configuration: one frozen settings model from a TOML file and ``ATLAS_*`` variables.

Precedence, highest first: explicit keyword arguments, environment variables
(``ATLAS_NATS__URL``, ``ATLAS_ROUTER__WORKERS`` ...), the TOML file (``--config`` or
``ATLAS_CONFIG``), defaults. Unknown keys in the file are errors, so a typo never silently
falls back to a default. ``deploy/atlas.toml`` is the commented sample.
"""

from __future__ import annotations

import ipaddress
import os
import tomllib
import urllib.parse
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from .errors import ConfigError

__all__ = [
    "LimitSettings",
    "MonitorSettings",
    "NatsSettings",
    "OrgRate",
    "RouterSettings",
    "Settings",
    "TaxiiSettings",
    "load_settings",
]

_MiB = 1024 * 1024


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class NatsSettings(_Section):
    url: str | None = None
    """A NATS URL (``nats://``/``tls://``); unset: the broker starts an embedded server."""
    host: str = "127.0.0.1"
    """Embedded server: listen address. Loopback unless you mean it."""
    port: int = Field(default=0, ge=0, le=65535)
    """Embedded server: client port; 0 picks a free one."""
    sync_always: bool = True
    """Embedded server: fsync every write (a single node has no replica to recover from)."""
    max_payload: int = Field(default=_MiB, ge=64 * 1024, le=8 * _MiB)
    user: str | None = None
    password: SecretStr | None = None
    token: SecretStr | None = None
    nkey_seed_file: Path | None = None
    creds_file: Path | None = None
    tls_ca_file: Path | None = None
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    connect_timeout: float = Field(default=5.0, gt=0)
    replicas: int = Field(default=1, ge=1, le=5)
    """Replicas of every stream and bucket: 1 for one server, 3 for a 3-node cluster."""
    stream_max_bytes: int = Field(default=8 * 1024 * _MiB, ge=64 * _MiB)
    """Most bytes DELIVERIES and VIEWS each keep (when full, new packages are refused,
    never old ones dropped). nats-server reserves both on its store's disk and, by
    default, grants JetStream 75% of the disk's free space: lower this on a small disk."""
    intake_max_bytes: int = Field(default=32 * _MiB, ge=_MiB)
    """Most bytes each organisation's intake streams (its submissions, its
    acknowledgements) keep; they keep a day, so this is what one organisation may send in
    a day before its publishes are refused. Its own: nobody else's fill it."""
    inbox_prefix: str | None = Field(default=None, pattern=r"^_INBOX\.[a-z0-9][a-z0-9_-]{0,62}$")
    """Reply subjects prefix (optional: under the generated configuration each organisation
    has an account of its own, and its replies never meet another's)."""
    api_prefix: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_$][A-Za-z0-9_$.-]*$")
    """JetStream API prefix. Under the generated configuration an organisation's account
    reaches the broker's streams through ``atlas.api`` (``deploy nats-config``); the broker
    itself leaves it unset."""

    @model_validator(mode="after")
    def _one_credential(self) -> NatsSettings:
        given = [
            name
            for name, value in (
                ("user/password", self.user),
                ("token", self.token),
                ("nkey_seed_file", self.nkey_seed_file),
                ("creds_file", self.creds_file),
            )
            if value is not None
        ]
        if len(given) > 1:
            raise ValueError(f"give one NATS credential, not {', '.join(given)}")
        if (self.user is None) != (self.password is None):
            raise ValueError("nats.user and nats.password go together")
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("nats.tls_cert_file and nats.tls_key_file go together")
        return self


class OrgRate(_Section):
    """One organisation's submission rate (``[limits.per_org.<org>]``)."""

    submissions_per_second: float = Field(ge=0, allow_inf_nan=False)
    """0: no limit for this organisation."""
    burst: int = Field(default=20, ge=1)


_PACKAGE_HEADERS = 16 * 1024


def package_limit(max_payload: int) -> int:
    """The largest signed submission whose sealed packages fit ``max_payload`` bytes."""
    return (max_payload - _PACKAGE_HEADERS) * 3 // 4


class LimitSettings(_Section):
    max_bundle_bytes: int = Field(default=750 * 1024, ge=1024)
    """Largest signed submission accepted. Its packages (about 4/3 of it) must fit
    nats.max_payload: at most (max_payload - 16 KiB) * 3/4, 774,144 for 1 MiB."""
    max_objects: int = Field(default=10_000, ge=1)
    """Most STIX objects in one bundle."""
    submissions_per_second: float = Field(default=0.0, ge=0, allow_inf_nan=False)
    """Submissions per second per organisation and broker process; 0 (default): no limit.
    Over the rate the organisation's next submission is held until its token is due, never
    dropped; other organisations' submissions go on meanwhile."""
    burst: int = Field(default=20, ge=1)
    """Submissions an organisation may make at once before the rate applies."""
    per_org: dict[str, OrgRate] = Field(default_factory=dict)
    """Overrides by organisation id."""
    max_inflight_publishes: int = Field(default=16, ge=1, le=1024)
    """Packages of one submission stored concurrently by one worker."""


class RouterSettings(_Section):
    workers: int = Field(default=2, ge=1, le=64)
    ack_wait: float = Field(default=30.0, gt=0)
    max_ack_pending: int = Field(default=1000, ge=1)
    """Submissions of one organisation handed out and not yet acked, across every process
    (being routed, waiting for a worker or a rate-limit token, put back after a fault).
    Past it that organisation's consumer (``route-<org>``) hands out nothing more until
    some are acked; the other organisations' consumers are not affected."""
    max_deliver: int = Field(default=-1, ge=-1)
    """Deliveries of one submission before the consumer gives up; -1 (default): never, so a
    transient fault (server, directory, broker key) can delay a submission but not drop it."""

    @field_validator("max_deliver")
    @classmethod
    def _not_zero(cls, value: int) -> int:
        if value == 0:
            raise ValueError("must be -1 (unlimited) or at least 1")
        return value

    package_ttl: int = Field(default=30 * 86400, ge=60)
    """Seconds a sealed package stays valid (its ``exp``)."""


class BrokerKeySettings(_Section):
    id: str = "atlas-broker"
    signing_key: Path | None = None
    """PKCS#8 PEM private key the broker signs packages with (mode 0600)."""
    signing_key_passphrase: SecretStr | None = None
    p256_signing_key: Path | None = None
    """Optional P-256 key (ES256): packages to organisations whose current encryption key
    is P-256 are signed with it, for agencies whose JOSE library has no EdDSA. Publish it
    in the directory's [broker] keys; ``signing_key_passphrase`` applies to it too."""
    digest_key_file: Path | None = None
    """32+ random bytes keying the digests of object ids in the log (created if missing)."""


class TaxiiSettings(_Section):
    """The TAXII 2.1 server (``atlas-broker taxii serve``)."""

    host: str = "127.0.0.1"
    port: int = Field(default=9443, ge=0, le=65535)
    cert_file: Path | None = None
    """PEM certificate chain for HTTPS; without it the server only listens on loopback."""
    key_file: Path | None = None
    credentials_file: Path | None = None
    """Hashed organisation secrets (``taxii passwd``).

    Default: ``data_dir/taxii-credentials.toml``."""
    cursor_key_file: Path | None = None
    """32 random bytes keying the ``next`` tokens and the status ids; share it between server
    instances behind a load balancer. Default ``data_dir/taxii-cursor.key`` (created on
    first use)."""
    api_root: str = Field(default="atlas", pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")
    public_url: str | None = None
    """The server's address as clients reach it (``https://taxii.example.org``), used in
    discovery's API root URLs. Unset: taken from the request (its Host header), which is
    right when clients reach the server directly."""
    trusted_proxies: list[str] = Field(default_factory=list)
    """Addresses or networks (``10.0.0.5``, ``10.0.0.0/24``) of reverse proxies in front
    whose ``X-Forwarded-For``/``X-Forwarded-Proto`` are believed. Empty (the default):
    none, from loopback either; behind a proxy every client then shares its address, and
    so its failed-login limits."""
    max_connections: int = Field(default=1000, ge=1)
    """Open client connections in all; more are closed as they arrive (lowered to what the
    process's file descriptor limit allows)."""
    max_connections_per_address: int = Field(default=100, ge=1)
    """Open client connections from one address (an IPv6 client's /64)."""
    header_timeout: float = Field(default=10.0, gt=0)
    """Seconds a connection gets to send a complete request head (from connecting, or from
    the previous response); then it is closed."""
    body_timeout: float = Field(default=30.0, gt=0)
    """Seconds a request body may go without a byte arriving, or a response without the client
    reading any of it; then the connection is closed (nothing of that request is accepted)."""
    body_deadline: float = Field(default=600.0, gt=0)
    """Seconds one request body may take in all, however steadily it trickles in."""

    @field_validator("trusted_proxies")
    @classmethod
    def _trusted_proxies(cls, value: list[str]) -> list[str]:
        for entry in value:
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError:
                raise ValueError(
                    f"{entry!r} is not an IP address or network (e.g. 10.0.0.0/24); "
                    "'*' is not taken: name the proxies"
                ) from None
        return value

    @field_validator("public_url")
    @classmethod
    def _public_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urllib.parse.urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"{value!r} is not an http(s) URL with a host")
        if parts.query or parts.fragment or parts.username or parts.password:
            raise ValueError(f"{value!r}: no query, fragment or user name in a public URL")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _tls_or_loopback(self) -> TaxiiSettings:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("taxii.cert_file and taxii.key_file go together")
        loopback = self.host in ("127.0.0.1", "::1", "localhost")
        if self.cert_file is None and not loopback:
            raise ValueError(
                f"taxii.host {self.host!r} is not loopback: set taxii.cert_file and "
                "taxii.key_file (plain HTTP is for loopback only)"
            )
        return self


class MonitorSettings(_Section):
    """The HTTP monitor of ``atlas-broker serve``: /healthz, /readyz, /metrics."""

    enabled: bool = True
    host: str = "127.0.0.1"
    """Listen address; loopback unless a scraper elsewhere needs it (no content is served,
    only counts; the organisation ids of the directory appear as labels)."""
    port: int = Field(default=9464, ge=0, le=65535)
    """0 picks a free port; the bound URL is written to ``data_dir/monitor/url``."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="ATLAS_",
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
    )

    data_dir: Path = Path("atlas-data")
    log_format: Literal["auto", "console", "json"] = "auto"
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    nats: NatsSettings = NatsSettings()
    limits: LimitSettings = LimitSettings()
    router: RouterSettings = RouterSettings()
    broker: BrokerKeySettings = BrokerKeySettings()
    taxii: TaxiiSettings = TaxiiSettings()
    monitor: MonitorSettings = MonitorSettings()

    @model_validator(mode="after")
    def _bundle_fits_payload(self) -> Settings:
        # A sealed package base64-encodes a view twice (JWS in JWE): about 4/3 of the signed
        # submission it came from, plus headers. Every bundle the limit admits must be
        # deliverable in one NATS message.
        largest = package_limit(self.nats.max_payload)
        if self.limits.max_bundle_bytes > largest:
            raise ValueError(
                f"limits.max_bundle_bytes ({self.limits.max_bundle_bytes}) is too large for "
                f"nats.max_payload ({self.nats.max_payload}): its sealed packages would not "
                f"fit one message; at most {largest}"
            )
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, TomlConfigSettingsSource(settings_cls))


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Load settings; a missing or invalid setting raises ``ConfigError`` naming it."""
    path = config_file
    if path is None and os.environ.get("ATLAS_CONFIG"):
        path = Path(os.environ["ATLAS_CONFIG"])
    if path is not None:
        if path.is_dir():
            raise ConfigError(f"configuration file {path} is a directory, not a TOML file")
        if not path.is_file():
            raise ConfigError(f"configuration file {path} does not exist")
        try:
            with path.open("rb") as fh:
                tomllib.load(fh)
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"configuration file {path} is not valid TOML: {exc}") from exc
        except OSError as exc:
            raise ConfigError(f"configuration file {path} cannot be read: {exc}") from exc

    class _FromFile(Settings):
        model_config = SettingsConfigDict(toml_file=path)

    try:
        return _FromFile(**overrides)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, path)) from exc


def _describe(exc: ValidationError, path: Path | None) -> str:
    where = f" in {path}" if path else ""
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown setting"
        parts.append(f"{loc}: {msg}" if loc else msg)
    return f"invalid configuration{where}: " + "; ".join(parts)
