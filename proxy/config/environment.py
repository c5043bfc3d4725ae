"""``${NAME}`` and ``${NAME:-default}`` in config values, replaced before anything is validated."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-(.*?))?\}")


def substitute_env(value: object, path: str, errors: list[str]) -> object:
    """``value`` with every reference replaced; an unset variable without a default is an error
    named by its key path."""
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
            k: substitute_env(v, f"{path}.{k}" if path else str(k), errors)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [substitute_env(v, f"{path}[{i}]", errors) for i, v in enumerate(value)]
    return value
