"""The check that ``catalog.query`` is one read-only SELECT binding ``:document_id``.

A first line of defence, made when the config is read: PostgreSQL and MySQL sessions are
opened read-only as well, and on PostgreSQL the query's plan is checked for functions that may
write (``proxy.catalog.postgresql``).
"""

from __future__ import annotations

import re

# Words that only appear in SQL that writes, locks or creates something. The query must also
# start with SELECT or WITH.
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
