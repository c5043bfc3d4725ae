"""Which config file docproxy reads, and reading it: YAML in, ``Settings`` or ``ConfigError``."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import yaml

from proxy.config.settings import ConfigError, Settings, parse_settings

DEFAULT_CONFIG_PATH = "config.yaml"
CONFIG_ENV = "DOCPROXY_CONFIG"
# libyaml's parser when PyYAML has it (a tenth of the pure-Python one's time, paid at every
# start); a file it refuses is read again by the pure-Python one, whose messages are clearer.
_FAST_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def config_path(explicit: str | None = None) -> str:
    """--config, else $DOCPROXY_CONFIG, else ./config.yaml."""
    return explicit or os.environ.get(CONFIG_ENV) or DEFAULT_CONFIG_PATH


def load_settings(path: str | os.PathLike[str]) -> Settings:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read config file ({exc.strerror})"]) from exc
    try:
        raw = _parse(text)
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


def _parse(text: str) -> object:
    try:
        return yaml.load(text, Loader=_FAST_LOADER)
    except yaml.YAMLError:
        return yaml.safe_load(text)  # its verdict stands, and its messages are clearer
