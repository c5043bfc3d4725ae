"""The API's OpenAPI 3.1 description: ``openapi.yaml`` beside this module, served as JSON."""

from __future__ import annotations

import functools
import json
from importlib import resources

import yaml

# libyaml's parser when PyYAML has it: the pure-Python one takes about 40 ms over this file,
# which the first request for it would wait for.
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@functools.cache
def openapi_json() -> bytes:
    """The description as JSON, read once (the YAML is the one source), by the first request
    for it: parsed at start, it held about 0.7 MiB of every idle server's memory (the
    parse's objects leave their memory pools partly used). The file ships in the package and
    the tests validate it."""
    text = resources.files(__package__).joinpath("openapi.yaml").read_text(encoding="utf-8")
    description = yaml.load(text, Loader=_LOADER)
    return json.dumps(description, ensure_ascii=False, separators=(",", ":")).encode()
