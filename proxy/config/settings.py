"""config.yaml, parsed once at start into frozen, typed objects.

Nothing outside this module reads the YAML mapping. Values may name environment variables as
``${NAME}`` or ``${NAME:-default}``; they are substituted before validation.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from backends.registry import backend_class, known_protocols
from proxy.config.section import Section

DEFAULT_CONFIG_PATH = "config.yaml"
CONFIG_ENV = "DOCPROXY_CONFIG"
_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-(.*?))?\}")


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
    access_log: bool = True  # uvicorn's line per request; docproxy logs each download anyway


@dataclass(frozen=True, slots=True)
class ClientConfig:
    client_id: str
    secret_sha256: bytes  # secrets are only ever compared as SHA-256 digests


@dataclass(frozen=True, slots=True)
class AuthConfig:
    signing_key: str
    algorithm: str = "HS256"
    issuer: str = "docproxy"
    audience: str = "docproxy"
    token_ttl: int = 3600
    leeway: int = 0
    clients: tuple[ClientConfig, ...] = ()


@dataclass(frozen=True, slots=True)
class PresignConfig:
    signing_key: str
    ttl: int = 3600
    # A presigned URL or link is handed out again while it has at least ttl - reuse_margin
    # seconds of validity left (0: sign every time).
    reuse_margin: int = 60


def default_reuse_margin(ttl: int) -> int:
    """60 s, but never more than a tenth of the validity: a short ttl is not eaten by reuse."""
    return min(60, ttl // 10)


@dataclass(frozen=True, slots=True)
class ColumnMap:
    """Catalog column names for each document field; None when the table lacks it."""

    id: str = "id"
    file_path: str = "file_path"
    url: str | None = None
    name: str | None = None
    type: str | None = None
    group: str | None = None
    size: str | None = None
    checksum: str | None = None
    updated_at: str | None = None
    deleted: str | None = None


# The table docproxy creates in its embedded SQLite file (``catalog.embedded: true``).
EMBEDDED_TABLE = "documents"
EMBEDDED_COLUMNS = ColumnMap(
    id="id",
    file_path="file_path",
    url="document_url",
    name="name",
    type="type",
    group="group_name",
    size="size",
    checksum="checksum",
    updated_at="updated_at",
    deleted="deleted_at",
)


@dataclass(frozen=True, slots=True)
class PoolConfig:
    """Connections to the catalog database; times are seconds."""

    min_size: int = 1
    max_size: int = 10
    connect_timeout: float = 5.0
    query_timeout: float = 10.0
    retry_interval: float = 1.0  # after a failed connect, answer 500 at once for this long


@dataclass(frozen=True, slots=True)
class CacheConfig:
    """Metadata cache per worker process; ``ttl`` 0 turns it off."""

    ttl: float = 0.0
    max_entries: int = 10_000


@dataclass(frozen=True, slots=True)
class CatalogConfig:
    url: str
    table: str = "documents"
    columns: ColumnMap = field(default_factory=ColumnMap)
    query: str | None = None
    embedded: bool = False  # docproxy owns this SQLite file and may create its table
    tenant_rule: str = "auto"  # auto: on when a group column is mapped
    pool: PoolConfig = field(default_factory=PoolConfig)
    cache: CacheConfig = field(default_factory=CacheConfig)


@dataclass(frozen=True, slots=True)
class BackendConfig:
    name: str
    protocol: str
    options: Any  # the backend class's own frozen options object


@dataclass(frozen=True, slots=True)
class StorageConfig:
    default: str
    backends: tuple[BackendConfig, ...]


@dataclass(frozen=True, slots=True)
class AccelRedirectConfig:
    """Hand local-file bodies to nginx: answer with ``X-Accel-Redirect: {prefix}{key}``."""

    enabled: bool = False
    prefix: str = "/protected/"  # an ``internal`` nginx location aliased to the local root


@dataclass(frozen=True, slots=True)
class DownloadConfig:
    cache_control: str = "no-cache"
    sniff_bytes: int = 2048
    accel_redirect: AccelRedirectConfig = field(default_factory=AccelRedirectConfig)


@dataclass(frozen=True, slots=True)
class Settings:
    server: ServerConfig
    auth: AuthConfig
    presign: PresignConfig
    catalog: CatalogConfig
    storage: StorageConfig
    download: DownloadConfig
    source: str = "<memory>"


def config_path(explicit: str | None = None) -> str:
    """--config, else $DOCPROXY_CONFIG, else ./config.yaml."""
    return explicit or os.environ.get(CONFIG_ENV) or DEFAULT_CONFIG_PATH


def load_settings(path: str | os.PathLike[str]) -> Settings:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read config file ({exc.strerror})"]) from exc
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "cannot be parsed"
        raise ConfigError([f"{path}: not valid YAML{where}: {problem}"]) from exc
    if raw is not None and not isinstance(raw, Mapping):
        raise ConfigError(
            [f"{path}: must be a mapping of sections (server, auth, ...), not a "
             f"{type(raw).__name__}"]
        )  # fmt: skip
    return parse_settings(raw, source=str(path))


def parse_settings(raw: object, *, source: str = "<memory>") -> Settings:
    """Validate a loaded YAML document; raise ConfigError listing every problem."""
    errors: list[str] = []
    raw = _substitute_env(raw, "", errors)
    root = Section(raw, "", errors)
    settings = Settings(
        server=_server(root.section("server")),
        auth=_auth(root.section("auth")),
        presign=_presign(root.section("presign")),
        catalog=_catalog(root.section("catalog")),
        storage=_storage(root.section("storage")),
        download=_download(root.section("download")),
        source=source,
    )
    _check_accel_redirect(settings, root)
    root.finish()
    if errors:
        raise ConfigError(errors)
    return settings


def _substitute_env(value: object, path: str, errors: list[str]) -> object:
    if isinstance(value, str):

        def replace(match: re.Match[str]) -> str:
            name, default = match.group(1), match.group(2)
            found = os.environ.get(name)
            if found is not None:
                return found
            if default is not None:
                return default
            errors.append(f"{path}: environment variable {name} is not set")
            return ""

        return _ENV_REF.sub(replace, value)
    if isinstance(value, Mapping):
        return {
            k: _substitute_env(v, f"{path}.{k}" if path else str(k), errors)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [_substitute_env(v, f"{path}[{i}]", errors) for i, v in enumerate(value)]
    return value


def _server(s: Section) -> ServerConfig:
    public_url = s.string("public_url")
    if public_url is not None and not re.match(r"^https?://[^/]+", public_url):
        s.error("public_url", f"must be an http(s) URL (got {public_url!r})")
    config = ServerConfig(
        host=s.string("host", "127.0.0.1") or "127.0.0.1",
        port=s.integer("port", 8080, minimum=0),
        workers=s.integer("workers", 1, minimum=1),
        public_url=public_url.rstrip("/") if public_url else None,
        log_level=s.string(
            "log_level", "info", choices=("critical", "error", "warning", "info", "debug")
        )
        or "info",
        access_log=s.boolean("access_log", True),
    )
    s.finish()
    return config


def _signing_key(s: Section, key: str) -> str:
    value = s.string(key, required=True) or ""
    if value and len(value.encode()) < 16:
        s.error(key, "must be at least 16 bytes long")
    return value


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
        signing_key=_signing_key(s, "signing_key"),
        algorithm=s.string("algorithm", "HS256", choices=("HS256", "HS384", "HS512")) or "HS256",
        issuer=s.string("issuer", "docproxy") or "docproxy",
        audience=s.string("audience", "docproxy") or "docproxy",
        token_ttl=s.integer("token_ttl", 3600, minimum=1),
        leeway=s.integer("leeway", 0, minimum=0),
        clients=tuple(clients),
    )
    s.finish()
    return config


def _presign(s: Section) -> PresignConfig:
    ttl = s.integer("ttl", 3600, minimum=1)
    config = PresignConfig(
        signing_key=_signing_key(s, "signing_key"),
        ttl=ttl,
        reuse_margin=s.integer("reuse_margin", default_reuse_margin(ttl), minimum=0),
    )
    if s.has("reuse_margin") and config.reuse_margin >= config.ttl:
        s.error("reuse_margin", f"must be less than ttl ({config.ttl})")
    s.finish()
    return config


_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]*$")
_TABLE = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]*(\.[A-Za-z_][A-Za-z0-9_$]*)?$")
# The drivers docproxy ships (databases' extras); SQLAlchemy-style "+driver" names are accepted.
_CATALOG_SCHEMES = {
    "sqlite": "sqlite",
    "sqlite+aiosqlite": "sqlite",
    "postgresql": "postgresql",
    "postgres": "postgresql",
    "postgresql+asyncpg": "postgresql",
    "mysql": "mysql",
    "mysql+aiomysql": "mysql",
}


def _identifier(
    s: Section, key: str, default: str | None, *, required: bool = False, dotted: bool = False
) -> str | None:
    value = s.string(key, default, required=required)
    pattern = _TABLE if dotted else _IDENTIFIER
    if value is not None and not pattern.match(value):
        shape = "schema.table or table" if dotted else "a plain column name"
        s.error(key, f"must be {shape} (letters, digits, _ and $), got {value!r}")
        return default
    return value


def _columns(s: Section) -> ColumnMap:
    columns = ColumnMap(
        id=_identifier(s, "id", "id") or "id",
        file_path=_identifier(s, "file_path", "file_path") or "file_path",
        url=_identifier(s, "url", None),
        name=_identifier(s, "name", None),
        type=_identifier(s, "type", None),
        group=_identifier(s, "group", None),
        size=_identifier(s, "size", None),
        checksum=_identifier(s, "checksum", None),
        updated_at=_identifier(s, "updated_at", None),
        deleted=_identifier(s, "deleted", None),
    )
    s.finish()
    return columns


# Words that only appear in SQL that writes, locks or creates something. The query must also
# start with SELECT or WITH; the session itself is read-only on PostgreSQL and MySQL.
_WRITE_WORDS = frozenset(
    {"INSERT", "UPDATE", "DELETE", "MERGE", "UPSERT", "CREATE", "ALTER", "DROP", "TRUNCATE"}
    | {"RENAME", "GRANT", "REVOKE", "LOCK", "INTO", "OUTFILE", "DUMPFILE"}
)
_SQL_NOISE = re.compile(
    # MySQL's "#" comments are not blanked: a false refusal is safer than hidden SQL.
    r"""--[^\n]*|/\*.*?(\*/|$)|'(?:[^']|'')*'?|"(?:[^"]|"")*"?|`(?:[^`]|``)*`?"""
    r"""|(?<![\w$])(\$[A-Za-z_0-9]*\$).*?(\2|$)""",
    re.DOTALL,
)
_PARAMETER = re.compile(r"(?<![:\w]):([A-Za-z_][A-Za-z0-9_]*)")


def read_only_query_problem(query: str) -> str | None:
    """Why ``query`` is not one read-only SELECT binding ``:document_id``, or None."""
    # Literals, quoted names and comments cannot write; blank them so their words do not count.
    code = _SQL_NOISE.sub(" ", query).strip()
    if code.endswith(";"):
        code = code[:-1].rstrip()
    if ";" in code:
        return "must be one statement (found ';' between statements)"
    first = code.split(None, 1)[0].upper() if code else ""
    if first not in ("SELECT", "WITH", "(SELECT"):
        return f"must be a read-only SELECT (it starts with {first or 'nothing'!r})"
    words = {word.upper() for word in re.findall(r"[A-Za-z_]+", code)}
    found = sorted(_WRITE_WORDS & words)
    if found:
        return f"must be a read-only SELECT (found {', '.join(found)})"
    parameters = set(_PARAMETER.findall(code))
    if "document_id" not in parameters:
        return "must use the :document_id parameter (the id is always bound, never formatted)"
    others = sorted(parameters - {"document_id"})
    if others:
        return f"only :document_id can be bound (found {', '.join(':' + p for p in others)})"
    return None


def _query(s: Section) -> str | None:
    query = s.string("query")
    if query is None:
        return None
    problem = read_only_query_problem(query)
    if problem is not None:
        s.error("query", problem)
        return None
    # One trailing ';' is harmless to the operator but not inside docproxy's probe subquery.
    return query.strip().removesuffix(";").rstrip()


def _pool(s: Section) -> PoolConfig:
    config = PoolConfig(
        min_size=s.integer("min_size", 1, minimum=0),
        max_size=s.integer("max_size", 10, minimum=1),
        connect_timeout=s.number("connect_timeout", 5.0, minimum=0.1),
        query_timeout=s.number("query_timeout", 10.0, minimum=0.1),
        retry_interval=s.number("retry_interval", 1.0, minimum=0),
    )
    if config.min_size > config.max_size:
        s.error("min_size", f"must not exceed max_size ({config.min_size} > {config.max_size})")
    s.finish()
    return config


def _cache(s: Section) -> CacheConfig:
    config = CacheConfig(
        ttl=s.number("ttl", 0.0, minimum=0), max_entries=s.integer("max_entries", 10_000, minimum=1)
    )
    s.finish()
    return config


def catalog_scheme(url: str) -> str | None:
    """``postgresql+asyncpg://...`` -> ``postgresql``; None for a driver docproxy lacks."""
    return _CATALOG_SCHEMES.get(url.split("://", 1)[0].lower()) if "://" in url else None


def _catalog(s: Section) -> CatalogConfig:
    url = s.string("url", required=True) or ""
    scheme = catalog_scheme(url)
    if url and scheme is None:
        s.error(
            "url",
            "must be a sqlite:///path, postgresql://user@host/db or mysql://user@host/db URL"
            f" (got scheme {url.split('://', 1)[0]!r})",
        )
    embedded = s.boolean("embedded", False)
    if embedded and scheme not in (None, "sqlite"):
        s.error("embedded", "only a sqlite:// catalog can be embedded")
    query = _query(s)
    if embedded:
        for key in ("table", "columns", "query"):
            if s.raw(key) is not None:
                s.error(key, "not allowed with catalog.embedded: true (the schema is docproxy's)")
        table, columns, query = EMBEDDED_TABLE, EMBEDDED_COLUMNS, None
    else:
        if query is not None and s.has("table"):
            s.error("table", "not used with catalog.query: give a table mapping or a query")
        table = _identifier(s, "table", "documents", dotted=True) or "documents"
        columns = _columns(s.section("columns"))
    config = CatalogConfig(
        url=url,
        table=table,
        columns=columns,
        query=query,
        embedded=embedded,
        tenant_rule=s.string("tenant_rule", "auto", choices=("auto", "on", "off")) or "auto",
        pool=_pool(s.section("pool")),
        cache=_cache(s.section("cache")),
    )
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
        backends.append(BackendConfig(name=str(name), protocol=protocol, options=options))
    if not backends and len(s.errors) == problems_before:
        s.error("backends", "at least one backend is required")
    default = s.string("default", required=True)
    if default is not None and backends and default not in {b.name for b in backends}:
        s.error("default", f"names no backend under storage.backends (got {default!r})")
    s.finish()
    return StorageConfig(default=default or "", backends=tuple(backends))


def _download(s: Section) -> DownloadConfig:
    config = DownloadConfig(
        cache_control=s.string("cache_control", "no-cache") or "no-cache",
        sniff_bytes=s.integer("sniff_bytes", 2048, minimum=0),
        accel_redirect=_accel_redirect(s.section("accel_redirect")),
    )
    s.finish()
    return config


_URI_PREFIX = re.compile(r"^/[A-Za-z0-9._~!$&'()*+,;=:@%/-]*$")


def _accel_redirect(s: Section) -> AccelRedirectConfig:
    prefix = s.string("prefix", "/protected/") or "/protected/"
    if not _URI_PREFIX.match(prefix):
        s.error("prefix", f"must be a URI path starting with '/' (got {prefix!r})")
    config = AccelRedirectConfig(
        enabled=s.boolean("enabled", False),
        prefix=prefix if prefix.endswith("/") else prefix + "/",
    )
    s.finish()
    return config


def _check_accel_redirect(settings: Settings, root: Section) -> None:
    """The offload maps one nginx location to one folder, so it needs exactly one local root."""
    if not settings.download.accel_redirect.enabled:
        return
    local = [b.name for b in settings.storage.backends if b.protocol == "file"]
    if len(local) != 1:
        root.errors.append(
            "download.accel_redirect.enabled: needs exactly one file backend under "
            f"storage.backends (found {len(local)})"
        )
