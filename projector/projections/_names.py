"""SQL names shared by the read-model modules: quoting physical table names.

Physical names come from the engine (a rebuild writes into shadow tables under
other names), so every statement is built from them at run time and cached.
"""

from __future__ import annotations

import hashlib

# Created by the engine's migration; every written row takes its next value.
UPDATED_SEQ = "projector_updated_seq"

# PostgreSQL truncates identifiers longer than this many bytes (NAMEDATALEN - 1).
_MAX_IDENT_BYTES = 63


def quote_ident(name: str) -> str:
    """Quote a possibly schema-qualified name (``schema.table``) part by part."""
    if not name:
        raise ValueError("empty SQL identifier")
    return ".".join('"' + part.replace('"', '""') + '"' for part in name.split("."))


def index_name(table: str, suffix: str) -> str:
    """The quoted name of ``table``'s index ``suffix``, unique per physical table.

    An index lives in its table's schema, so only the table's last name part is
    used. Names too long for PostgreSQL get a hash instead of being truncated
    silently, which could make two shadow tables' indexes collide.
    """
    base = table.rsplit(".", 1)[-1]
    name = f"{base}_{suffix}"
    if len(name.encode()) > _MAX_IDENT_BYTES:
        digest = hashlib.sha1(base.encode()).hexdigest()[:10]
        keep = _MAX_IDENT_BYTES - len(suffix) - len(digest) - 2
        name = f"{base.encode()[:keep].decode(errors='ignore')}_{digest}_{suffix}"
    return quote_ident(name)
