"""The API's OpenAPI 3.1 description: ``openapi.yaml`` beside this module, served as JSON."""

from __future__ import annotations

import functools
import json
from importlib import resources

import yaml


@functools.cache
def openapi_json() -> bytes:
    """The description as JSON, read once (the YAML is the one source)."""
    text = resources.files(__package__).joinpath("openapi.yaml").read_text(encoding="utf-8")
    return json.dumps(yaml.safe_load(text), ensure_ascii=False, separators=(",", ":")).encode()
