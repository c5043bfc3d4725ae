"""config.yaml's sections, parsed once at start into frozen, typed objects: ``Settings``.

Nothing else reads the YAML mapping. Each section is parsed by its owner through the section
reader (``proxy.config.section``): the server, auth, presign and download sections here, the
catalog by ``proxy.catalog.settings``, each storage backend by its class, found in
``backends.registry``. Those two imports are the only ones from this package upwards: they hand a
section to its owner, and neither imports anything back but the section reader, so the imports
stay acyclic. Values may name environment variables (``proxy.config.environment``); they are
substituted before validation.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from backends.registry import backend_class, known_protocols
from proxy.catalog.settings import CatalogConfig, parse_catalog
from proxy.config.environment import substitute_env
from proxy.config.section import Section, given
from proxy.server.config import ServerLimits, parse_limits


class ConfigError(Exception):
    """The config is unusable; ``problems`` names each bad key with its dotted path."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


@dataclass(frozen=True, slots=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8080
    workers: int = 1
    public_url: str | None = None  # base of the proxy's own signed links; else the request's
    log_level: str = "info"
    log_format: str = "text"  # or "json": one object per line, uvicorn's lines included
    audit_log: bool = False  # one docproxy.audit event per token, presigned URL and download
    access_log: bool = True  # uvicorn's line per request; docproxy logs each download anyway
    limits: ServerLimits = field(default_factory=ServerLimits)  # read by proxy.server.config


@dataclass(frozen=True, slots=True)
class ClientConfig:
    client_id: str
    secret_sha256: bytes  # secrets are only ever compared as SHA-256 digests


@dataclass(frozen=True, slots=True)
class SigningKey:
    """One HMAC key and the id that tokens (``kid``) and links (``kid=``) name it by."""

    id: str
    key: str = field(repr=False)
    # Where the file wrote it (``auth.signing_key`` or ``auth.signing_keys[0].key``), for
    # messages about the key.
    key_path: str = field(default="", compare=False)


# The id of the key given in the single-key form (``signing_key: ...``).
DEFAULT_KEY_ID = "default"


def single_key(key: str, key_path: str = "") -> tuple[SigningKey, ...]:
    """The key ring of the single-key form."""
    return (SigningKey(DEFAULT_KEY_ID, key, key_path),)


@dataclass(frozen=True, slots=True)
class AuthConfig:
    # The first key signs, every key verifies: a rotation adds the new key second, then moves
    # it first, then drops the old one once nothing it signed is still live.
    signing_keys: tuple[SigningKey, ...]
    algorithm: str = "HS256"
    issuer: str = "docproxy"
    audience: str = "docproxy"
    token_ttl: int = 3600
    leeway: int = 0
    # Requests must carry X-Device-Fingerprint equal to the token's fingerprint claim.
    bind_fingerprint: bool = False
    clients: tuple[ClientConfig, ...] = ()
    # Failed logins per client id and per remote address within the window, after which the
    # token endpoint answers 429 (0: no limit).
    max_failed_logins: int = 5
    failed_login_window: int = 60
    # Identity providers whose tokens the download endpoints accept beside docproxy's own.
    issuers: tuple[IssuerConfig, ...] = ()
    jwks_min_refresh: float = 60.0  # seconds between refetches of a provider's keys
    jwks_timeout: float = 2.0  # a JWKS fetch slower than this refuses the token at hand


@dataclass(frozen=True, slots=True)
class IssuerClaims:
    """The provider's names for the claims docproxy reads."""

    group: str = "group_name"
    email: str = "email"
    subject: str = "sub"


@dataclass(frozen=True, slots=True)
class IssuerConfig:
    """An identity provider (``auth.issuers[i]``): tokens whose ``iss`` is ``issuer``, checked
    with the keys at ``jwks_url`` or in ``jwks_file`` (read at start and on reload)."""

    issuer: str
    audience: str
    jwks_url: str | None = None
    jwks: str | None = field(default=None, repr=False)  # the text of jwks_file
    algorithms: tuple[str, ...] = ("RS256",)
    claims: IssuerClaims = field(default_factory=IssuerClaims)


@dataclass(frozen=True, slots=True)
class PresignConfig:
    signing_keys: tuple[SigningKey, ...]  # as auth.signing_keys
    ttl: int = 3600
    # A presigned URL or link is handed out again while it has at least ttl - reuse_margin
    # seconds of validity left (0: sign every time). Left out: 60 s, but never more than a
    # tenth of the ttl, so that a short ttl is not eaten by reuse.
    reuse_margin: int | None = None

    def __post_init__(self) -> None:
        if self.reuse_margin is None:
            object.__setattr__(self, "reuse_margin", min(60, self.ttl // 10))


@dataclass(frozen=True, slots=True)
class BackendConfig:
    name: str
    protocol: str
    options: Any  # the backend class's own frozen options object
    local_root: Path | None = None  # the folder of its objects, for a backend on local disk


@dataclass(frozen=True, slots=True)
class StorageConfig:
    default: str
    backends: tuple[BackendConfig, ...]


@dataclass(frozen=True, slots=True)
class AccelRedirectConfig:
    """Hand local-file bodies to nginx: answer with ``X-Accel-Redirect: {prefix}{key}``."""

    enabled: bool = False
    prefix: str = "/protected/"  # an ``internal`` nginx location aliased to the local root


# Served inline on request: types browsers show without running anything (no HTML, no SVG).
INLINE_TYPES = ("application/pdf", "image/png", "image/jpeg", "image/gif", "image/webp")
_MIME_TYPE = re.compile(r"[a-z0-9][a-z0-9!#$&^_.+-]*/[a-z0-9][a-z0-9!#$&^_.+-]*")


@dataclass(frozen=True, slots=True)
class DownloadConfig:
    inline_types: tuple[str, ...] = INLINE_TYPES  # what disposition=inline may show inline
    cache_control: str = "no-cache"
    sniff_bytes: int = 2048
    # A reader that takes no byte for this long is cut off; a slow one keeps its stream.
    send_timeout: float = 60.0
    # Local files leave by sendfile(2) on plain TCP: far less CPU, no copy in memory.
    sendfile: bool = True
    # How many bytes the kernel may hold in flight to a reader, which the last bytes of a
    # sendfile'd body exceed (they go through Python, checked); None: read from /proc/sys/net.
    sendfile_in_flight: int | None = None
    accel_redirect: AccelRedirectConfig = field(default_factory=AccelRedirectConfig)


@dataclass(frozen=True, slots=True)
class StateConfig:
    """Where revocations, link uses and rate counters live: Redis when ``redis_url`` is set
    (shared by every replica), else a SQLite file on this host."""

    redis_url: str | None = None
    key_prefix: str = "docproxy:"  # every Redis key and channel starts with it
    path: str | None = None  # the SQLite file; left out: beside the SQLite catalog or config


@dataclass(frozen=True, slots=True)
class MetricsConfig:
    enabled: bool = True
    # A listener of its own for /metrics (then not served on the API's port); None: the API's.
    port: int | None = None
    host: str | None = None  # the separate listener's address; None: server.host


@dataclass(frozen=True, slots=True)
class LimitsConfig:
    """Requests per minute for each (client id, subject) pair; None: no limit."""

    downloads_per_minute: int | None = None
    presigns_per_minute: int | None = None


@dataclass(frozen=True, slots=True)
class HealthConfig:
    timeout: float = 2.0  # each readiness probe (catalog, every store) must answer within it
    interval: float = 5.0  # a readiness result is reused this long: probes cost nothing under load


@dataclass(frozen=True, slots=True)
class ZipConfig:
    """Archives of many documents (``POST /download/zip``)."""

    max_documents: int = 1000
    max_bytes: int = 16 * 1024**3  # the documents' total size, before any compression
    compress: bool = False  # deflate entries; stored entries let the response carry a length


@dataclass(frozen=True, slots=True)
class CorsConfig:
    """Web pages of other origins allowed to call the API from a browser (CORS)."""

    allow_origins: tuple[str, ...] = ()  # none: no cross-origin page may call
    allow_methods: tuple[str, ...] = ("GET", "HEAD", "POST")
    allow_headers: tuple[str, ...] = ("Authorization", "Content-Type", "Range")
    max_age: int = 600  # seconds a browser may reuse a preflight's answer


@dataclass(frozen=True, slots=True)
class Settings:
    server: ServerConfig
    auth: AuthConfig
    presign: PresignConfig
    catalog: CatalogConfig
    storage: StorageConfig
    download: DownloadConfig
    state: StateConfig = field(default_factory=StateConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    health: HealthConfig = field(default_factory=HealthConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    zip: ZipConfig = field(default_factory=ZipConfig)
    cors: CorsConfig = field(default_factory=CorsConfig)
    source: str = "<memory>"


LOG_LEVELS = ("critical", "error", "warning", "info", "debug")
LOG_FORMATS = ("text", "json")
ALGORITHMS = ("HS256", "HS384", "HS512")
ISSUER_ALGORITHMS = ("RS256", "ES256", "EdDSA")  # public-key only: no shared secret to confuse


def parse_settings(raw: object, *, source: str = "<memory>") -> Settings:
    """Validate a loaded YAML document; raise ConfigError listing every problem."""
    errors: list[str] = []
    raw = substitute_env(raw, "", errors)
    root = Section(raw, "", errors)
    settings = Settings(
        server=_server(root.section("server")),
        auth=_auth(root.section("auth")),
        presign=_presign(root.section("presign")),
        catalog=parse_catalog(root.section("catalog")),
        storage=_storage(root.section("storage")),
        download=_download(root.section("download")),
        state=_state(root.section("state")),
        limits=_limits(root.section("limits")),
        health=_health(root.section("health")),
        metrics=_metrics(root.section("metrics")),
        zip=_zip(root.section("zip")),
        cors=_cors(root.section("cors")),
        source=source,
    )
    _check_accel_redirect(settings, root)
    root.finish()
    if errors:
        raise ConfigError(errors)
    return settings


def _server(s: Section) -> ServerConfig:
    public_url = s.string("public_url")
    if public_url is not None and not re.match(r"^https?://[^/]+", public_url):
        s.error("public_url", f"must be an http(s) URL (got {public_url!r})")
    config = ServerConfig(
        **given(
            host=s.string("host") or None,  # empty: the default address
            port=s.integer("port", minimum=0),
            workers=s.integer("workers", minimum=1),
            public_url=public_url.rstrip("/") if public_url else None,
            log_level=s.string("log_level", choices=LOG_LEVELS),
            log_format=s.string("log_format", choices=LOG_FORMATS),
            audit_log=s.boolean("audit_log"),
            access_log=s.boolean("access_log"),
            limits=parse_limits(s),
        )
    )
    s.finish()
    return config


def _health(s: Section) -> HealthConfig:
    config = HealthConfig(
        **given(
            timeout=s.number("timeout", minimum=0.1),
            interval=s.number("interval", minimum=0),
        )
    )
    s.finish()
    return config


_KEY_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")


def _metrics(s: Section) -> MetricsConfig:
    config = MetricsConfig(
        **given(
            enabled=s.boolean("enabled"),
            port=s.integer("port", minimum=1),
            host=s.string("host") or None,
        )
    )
    if config.host is not None and config.port is None:
        s.error("host", "needs metrics.port (the separate listener it is the address of)")
    s.finish()
    return config


# scheme://host[:port], the host a name or a bracketed IPv6 address: what a browser sends.
_ORIGIN = re.compile(r"^https?://([A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])(:[0-9]{1,5})?$")
_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")  # an HTTP method or header name
CORS_METHODS = ("GET", "HEAD", "POST", "OPTIONS")


def _strings(s: Section, key: str, check: Callable[[str], str | None]) -> tuple[str, ...] | None:
    """A list of strings, each passed through ``check`` (which returns a problem or None)."""
    raw = s.sequence(key)
    if not s.has(key):
        return None
    values: list[str] = []
    for index, value in enumerate(raw):
        problem = check(value) if isinstance(value, str) else f"must be a string, not {value!r}"
        if problem is not None:
            s.error(f"{key}[{index}]", problem)
        else:
            values.append(value)
    return tuple(values)


def _origin(value: str) -> str | None:
    if value == "*" or _ORIGIN.match(value):
        return None
    return f"must be an origin such as https://app.example.com (no path) or '*', not {value!r}"


def _method(value: str) -> str | None:
    return None if value in CORS_METHODS else f"must be one of {', '.join(CORS_METHODS)}"


def _header(value: str) -> str | None:
    return None if _TOKEN.match(value) else f"must be a header name, not {value!r}"


def _cors(s: Section) -> CorsConfig:
    config = CorsConfig(
        **given(
            allow_origins=_strings(s, "allow_origins", _origin),
            allow_methods=_strings(s, "allow_methods", _method),
            allow_headers=_strings(s, "allow_headers", _header),
            max_age=s.integer("max_age", minimum=0),
        )
    )
    s.finish()
    return config


def _signing_key(s: Section, key: str) -> str:
    value = s.string(key, required=True) or ""
    if value and len(value.encode()) < 16:
        s.error(key, "must be at least 16 bytes long")
    return value


def _signing_keys(s: Section) -> tuple[SigningKey, ...]:
    """``signing_key: K`` (key id "default") or ``signing_keys: [{id, key}, ...]``."""
    if not s.has("signing_keys"):
        return single_key(_signing_key(s, "signing_key"), s.key_path("signing_key"))
    if s.raw("signing_key") is not None:
        s.error("signing_key", "give signing_key or signing_keys, not both")
    entries = s.sequence("signing_keys")
    if not entries and s.raw("signing_keys") == []:
        s.error("signing_keys", "must list at least one key")
    keys: list[SigningKey] = []
    for index, raw in enumerate(entries):
        entry = Section(raw, s.key_path(f"signing_keys[{index}]"), s.errors)
        key_id = entry.string("id", required=True)
        if key_id and not _KEY_ID.fullmatch(key_id):
            entry.error("id", f"must be 1 to 64 of A-Z a-z 0-9 . _ - (got {key_id!r})")
            key_id = None
        key = _signing_key(entry, "key")
        entry.finish()
        if key_id and key:
            keys.append(SigningKey(key_id, key, entry.key_path("key")))
    ids = [k.id for k in keys]
    for duplicate in sorted({i for i in ids if ids.count(i) > 1}):
        s.error("signing_keys", f"id {duplicate!r} is declared twice")
    return tuple(keys)


def _client(raw: object, path: str, errors: list[str]) -> ClientConfig | None:
    s = Section(raw, path, errors)
    client_id = s.string("client_id", required=True)
    secret = s.string("client_secret")
    digest_hex = s.string("client_secret_sha256")
    s.finish()
    if (secret is None) == (digest_hex is None):
        errors.append(f"{path}: give exactly one of client_secret or client_secret_sha256")
        return None
    if digest_hex is not None:
        try:
            digest = bytes.fromhex(digest_hex)
        except ValueError:
            digest = b""
        if len(digest) != 32:
            errors.append(f"{path}.client_secret_sha256: must be 64 hex digits")
            return None
    else:
        assert secret is not None
        if not secret:
            errors.append(f"{path}.client_secret: must not be empty")
            return None
        digest = hashlib.sha256(secret.encode()).digest()
    return ClientConfig(client_id=client_id or "", secret_sha256=digest) if client_id else None


def _auth(s: Section) -> AuthConfig:
    clients: list[ClientConfig] = []
    for index, raw in enumerate(s.sequence("clients")):
        client = _client(raw, s.key_path(f"clients[{index}]"), s.errors)
        if client is not None:
            clients.append(client)
    ids = [c.client_id for c in clients]
    for duplicate in sorted({i for i in ids if ids.count(i) > 1}):
        s.error("clients", f"client_id {duplicate!r} is declared twice")
    config = AuthConfig(
        **given(
            signing_keys=_signing_keys(s),
            algorithm=s.string("algorithm", choices=ALGORITHMS),
            issuer=s.string("issuer") or None,
            audience=s.string("audience") or None,
            token_ttl=s.integer("token_ttl", minimum=1),
            leeway=s.integer("leeway", minimum=0),
            bind_fingerprint=s.boolean("bind_fingerprint"),
            clients=tuple(clients),
            max_failed_logins=s.integer("max_failed_logins", minimum=0),
            failed_login_window=s.integer("failed_login_window", minimum=1),
            issuers=_issuers(s),
            jwks_min_refresh=s.number("jwks_min_refresh", minimum=0),
            jwks_timeout=s.duration("jwks_timeout"),
        )
    )
    s.finish()
    return config


def _issuers(s: Section) -> tuple[IssuerConfig, ...] | None:
    issuers = [_issuer(s, index, raw) for index, raw in enumerate(s.sequence("issuers"))]
    names = [i.issuer for i in issuers if i is not None]
    for duplicate in sorted({n for n in names if names.count(n) > 1}):
        s.error("issuers", f"issuer {duplicate!r} is declared twice")
    return tuple(i for i in issuers if i is not None) if s.has("issuers") else None


def _issuer(parent: Section, index: int, raw: object) -> IssuerConfig | None:
    s = Section(raw, parent.key_path(f"issuers[{index}]"), parent.errors)
    issuer = s.string("issuer", required=True)
    audience = s.string("audience", required=True)
    jwks_url = s.string("jwks_url")
    jwks_file = s.string("jwks_file")
    if jwks_url is None and jwks_file is None:
        s.error("jwks_url", "required (or jwks_file)")
    elif jwks_url is not None and jwks_file is not None:
        s.error("jwks_url", "give jwks_url or jwks_file, not both")
    if jwks_url is not None and not re.match(r"^https?://[^/\s]+", jwks_url):
        s.error("jwks_url", f"must be an http(s) URL (got {jwks_url!r})")
    jwks = _jwks_file(s, jwks_file) if jwks_file is not None else None
    algorithms = _strings(s, "algorithms", _issuer_algorithm)
    if s.raw("algorithms") == []:
        s.error("algorithms", "must list at least one algorithm")
    claims = s.section("claims")
    mapped = IssuerClaims(
        **given(
            group=claims.string("group"),
            email=claims.string("email"),
            subject=claims.string("subject"),
        )
    )
    claims.finish()
    s.finish()
    if not issuer or not audience:
        return None
    return IssuerConfig(
        **given(
            issuer=issuer,
            audience=audience,
            jwks_url=jwks_url,
            jwks=jwks,
            algorithms=algorithms or None,
            claims=mapped,
        )
    )


def _issuer_algorithm(value: str) -> str | None:
    if value in ISSUER_ALGORITHMS:
        return None
    return f"must be one of {', '.join(ISSUER_ALGORITHMS)} (got {value!r})"


def _jwks_file(s: Section, path: str) -> str | None:
    """The file's text if it holds a JWKS (``{"keys": [...]}``); its keys are parsed later."""
    try:
        text = Path(path).read_text()
        keys = json.loads(text).get("keys")
    except (OSError, ValueError, AttributeError) as exc:
        s.error("jwks_file", f"cannot read a JWKS from {path!r}: {exc}")
        return None
    if not isinstance(keys, list):
        s.error("jwks_file", f"{path!r} must hold a JSON object with a list of keys")
        return None
    return text


def _presign(s: Section) -> PresignConfig:
    config = PresignConfig(
        **given(
            ttl=s.integer("ttl", minimum=1),
            signing_keys=_signing_keys(s),
            reuse_margin=s.integer("reuse_margin", minimum=0),
        )
    )
    if s.has("reuse_margin") and config.reuse_margin >= config.ttl:
        s.error("reuse_margin", f"must be less than ttl ({config.ttl})")
    s.finish()
    return config


def _storage(s: Section) -> StorageConfig:
    backends: list[BackendConfig] = []
    problems_before = len(s.errors)
    raw_backends = s.section("backends")
    for name in raw_backends.names():
        entry = raw_backends.section(str(name))
        protocol = entry.string("protocol", required=True, choices=known_protocols())
        if protocol is None:
            continue
        cls = backend_class(protocol)
        options = cls.parse_options(entry)
        entry.finish()
        backends.append(
            BackendConfig(str(name), protocol, options, local_root=cls.local_root(options))
        )
    if not backends and len(s.errors) == problems_before:
        s.error("backends", "at least one backend is required")
    default = s.string("default", required=True)
    if default is not None and backends and default not in {b.name for b in backends}:
        s.error("default", f"names no backend under storage.backends (got {default!r})")
    s.finish()
    return StorageConfig(default=default or "", backends=tuple(backends))


def _download(s: Section) -> DownloadConfig:
    config = DownloadConfig(
        **given(
            cache_control=s.string("cache_control") or None,
            sniff_bytes=s.integer("sniff_bytes", minimum=0),
            inline_types=_inline_types(s),
            send_timeout=s.duration("send_timeout"),
            sendfile=s.boolean("sendfile"),
            sendfile_in_flight=_auto_size(s, "sendfile_in_flight"),
            accel_redirect=_accel_redirect(s.section("accel_redirect")),
        )
    )
    s.finish()
    return config


def _auto_size(s: Section, key: str) -> int | None:
    """A byte size, or ``auto`` (None: the field's default, worked out at start)."""
    return None if s.raw(key) == "auto" else s.size(key)


def _state(s: Section) -> StateConfig:
    redis_url = s.string("redis_url") or None
    if redis_url is not None and not re.match(r"^(redis|rediss|unix)://", redis_url):
        s.error("redis_url", "must be a redis://, rediss:// or unix:// URL")
    config = StateConfig(
        **given(
            redis_url=redis_url,
            key_prefix=s.string("key_prefix"),
            path=s.string("path") or None,
        )
    )
    s.finish()
    return config


def _limits(s: Section) -> LimitsConfig:
    config = LimitsConfig(
        **given(
            downloads_per_minute=s.integer("downloads_per_minute", minimum=1),
            presigns_per_minute=s.integer("presigns_per_minute", minimum=1),
        )
    )
    s.finish()
    return config


def _zip(s: Section) -> ZipConfig:
    config = ZipConfig(
        **given(
            max_documents=s.integer("max_documents", minimum=1),
            max_bytes=s.size("max_bytes"),
            compress=s.boolean("compress"),
        )
    )
    s.finish()
    return config


def _inline_types(s: Section) -> tuple[str, ...] | None:
    if not s.has("inline_types"):
        s.raw("inline_types")
        return None
    types: list[str] = []
    for index, value in enumerate(s.sequence("inline_types")):
        if isinstance(value, str) and _MIME_TYPE.fullmatch(value):
            types.append(value)
        else:
            s.error(f"inline_types[{index}]", f"must be a lower-case MIME type, not {value!r}")
    return tuple(types)


_URI_PREFIX = re.compile(r"^/[A-Za-z0-9._~!$&'()*+,;=:@%/-]*$")


def _accel_redirect(s: Section) -> AccelRedirectConfig:
    prefix = s.string("prefix") or None
    if prefix is not None and not _URI_PREFIX.match(prefix):
        s.error("prefix", f"must be a URI path starting with '/' (got {prefix!r})")
    config = AccelRedirectConfig(
        **given(
            enabled=s.boolean("enabled"),
            prefix=prefix if prefix is None or prefix.endswith("/") else prefix + "/",
        )
    )
    s.finish()
    return config


def _check_accel_redirect(settings: Settings, root: Section) -> None:
    """The offload maps one nginx location to one folder, so it needs exactly one local root."""
    if not settings.download.accel_redirect.enabled:
        return
    local = [b.name for b in settings.storage.backends if b.local_root is not None]
    if len(local) != 1:
        root.errors.append(
            "download.accel_redirect.enabled: needs exactly one file backend under "
            f"storage.backends (found {len(local)})"
        )
