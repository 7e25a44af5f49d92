"""The event contracts: the JSON Schemas in ``schemas/``, loaded and compiled once.

The files under ``schemas/`` are the contract; this module only reads them.
``events/<EventType>.v<N>.json`` describes the payload of one type and version,
``envelope.json`` the fields every message carries, ``common.json`` the shared
definitions they ``$ref``.

Two things happen at load time, so that decoding a message does no schema work:

* ``$ref``s are inlined before compiling. fastjsonschema compiles a ``$ref`` into
  a function call that formats its error-path string eagerly, on every valid
  call too; inlined, its OrderPlaced validator runs almost twice as fast.
* Money and timestamp fields are recognised by the definition they reference
  (``common.json#/$defs/money`` ...) and tagged ``"x-decode"``; each schema is
  also compiled by :mod:`projector.contracts.compiler` into a fast function
  that checks a payload and builds ``Event.payload`` in one pass.

The schemas declare draft 2020-12 but keep to the keywords whose meaning is the
same in draft 7 (``type``, ``properties``, ``required``, ``items`` with one
schema, ``minimum``, ``pattern`` ...), because fastjsonschema implements drafts
4 to 7. The compiler (:mod:`projector.contracts.compiler`) refuses, at start-up,
any keyword outside that subset.
"""

from __future__ import annotations

import json
import os
import posixpath
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fastjsonschema

from projector.contracts.compiler import Builder, compile_builder
from projector.errors import ConfigError

# The repository's schemas/ directory (this file is projector/contracts/registry.py),
# unless PROJECTOR_SCHEMA_DIR points elsewhere (an installed, non-editable copy:
# the Docker image sets it).
SCHEMA_DIR: Path = Path(
    os.environ.get("PROJECTOR_SCHEMA_DIR") or Path(__file__).resolve().parents[2] / "schemas")

_FILE_RE = re.compile(r"^(?P<type>[A-Za-z][A-Za-z0-9]*)\.v(?P<version>[1-9][0-9]*)\.json$")
Validator = Callable[[Any], Any]


# Fields that $ref these definitions are tagged "x-decode" when inlined; the
# compiled builders convert them (projector.contracts.compiler).
_DECODE_OF_DEF: Mapping[str, str] = {
    "money": "money",
    "optionalMoney": "money",
    "timestamp": "timestamp",
    "optionalTimestamp": "timestamp",
}


@dataclass(frozen=True, slots=True)
class Contract:
    """One event type at one schema version."""

    event_type: str
    version: int
    schema: Mapping[str, Any]  # with every $ref inlined
    validate: Validator  # fastjsonschema: raises JsonSchemaValueException saying why
    build: Builder  # fast check-and-normalise: raises compiler.Invalid


@dataclass(frozen=True, slots=True)
class Catalogue:
    """Every contract found in a schema directory."""

    envelope: Validator
    build_envelope: Builder
    envelope_schema: Mapping[str, Any]  # with every $ref inlined
    contracts: Mapping[tuple[str, int], Contract]
    current: Mapping[str, int]  # event type -> highest version

    def contract(self, event_type: str, version: int) -> Contract | None:
        return self.contracts.get((event_type, version))


def load_catalogue(schema_dir: Path = SCHEMA_DIR) -> Catalogue:
    """Read and compile ``envelope.json`` and every ``events/<Type>.v<N>.json``.

    Raises :class:`ConfigError` naming the file when the directory or a schema
    is missing or malformed. Compiling all schemas takes some tens of
    milliseconds: do it once (``Decoder`` does).
    """
    if not (schema_dir / "envelope.json").is_file():
        raise ConfigError(
            f"Schema directory {schema_dir} has no envelope.json: the event contracts live in "
            "schemas/ of the source tree; pass schema_dir= when they are elsewhere."
        )
    loader = _Loader(schema_dir)
    envelope_schema = loader.inline(loader.read("envelope.json"), "envelope.json")
    envelope = _compile(envelope_schema, "envelope.json")
    contracts: dict[tuple[str, int], Contract] = {}
    events_dir = schema_dir / "events"
    if not events_dir.is_dir():
        raise ConfigError(
            f"Schema directory {events_dir} not found: the event contracts live there "
            "(schemas/ of the source tree; pass schema_dir= when it is elsewhere)."
        )
    for path in sorted(events_dir.iterdir()):
        match = _FILE_RE.match(path.name)
        if match is None:
            if path.suffix == ".json":
                raise ConfigError(f"{path}: schema files are named <EventType>.v<N>.json.")
            continue
        rel = f"events/{path.name}"
        schema = loader.inline(loader.read(rel), rel)
        event_type, version = match["type"], int(match["version"])
        contracts[(event_type, version)] = Contract(
            event_type=event_type,
            version=version,
            schema=schema,
            validate=_compile(schema, rel),
            build=compile_builder(schema, f"{event_type} v{version}"),
        )
    current: dict[str, int] = {}
    for event_type, version in contracts:
        current[event_type] = max(version, current.get(event_type, 0))
    return Catalogue(
        envelope=envelope,
        build_envelope=compile_builder(envelope_schema, "envelope"),
        envelope_schema=envelope_schema,
        contracts=contracts,
        current=current,
    )


def _compile(schema: Mapping[str, Any], rel: str) -> Validator:
    try:
        validate: Validator = fastjsonschema.compile(
            dict(schema), use_default=False, detailed_exceptions=True
        )
    except fastjsonschema.JsonSchemaDefinitionException as exc:
        raise ConfigError(f"schemas/{rel} does not compile: {exc}") from exc
    return validate


class _Loader:
    """Reads schema files under one directory and inlines their $refs."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._cache: dict[str, dict[str, Any]] = {}

    def read(self, rel: str) -> dict[str, Any]:
        if rel not in self._cache:
            path = self.root / rel
            try:
                doc = json.loads(path.read_text(encoding="utf-8"))
            except FileNotFoundError as exc:
                raise ConfigError(f"Schema file {path} not found.") from exc
            except ValueError as exc:
                raise ConfigError(f"Schema file {path} is not valid JSON: {exc}") from exc
            if not isinstance(doc, dict):
                raise ConfigError(f"Schema file {path} must hold a JSON object.")
            self._cache[rel] = doc
        return self._cache[rel]

    def inline(self, node: Any, rel: str, depth: int = 0) -> Any:
        """A copy of ``node`` with every $ref replaced by its target (siblings kept)."""
        if depth > 50:
            raise ConfigError(f"schemas/{rel}: $ref nesting too deep (a cycle?).")
        if isinstance(node, list):
            return [self.inline(x, rel, depth + 1) for x in node]
        if not isinstance(node, dict):
            return node
        out: dict[str, Any] = {}
        ref = node.get("$ref")
        if isinstance(ref, str):
            target_rel, target = self._resolve(ref, rel)
            out.update(self.inline(target, target_rel, depth + 1))
            decode = _DECODE_OF_DEF.get(ref.rpartition("/")[2])
            if decode is not None and target_rel == "common.json":
                out["x-decode"] = decode
        for k, v in node.items():
            if k in ("$ref", "$defs", "$id", "$schema"):
                continue
            out[k] = self.inline(v, rel, depth + 1)
        return out

    def _resolve(self, ref: str, rel: str) -> tuple[str, Any]:
        file_part, _, pointer = ref.partition("#")
        target_rel = rel
        if file_part:
            target_rel = posixpath.normpath(posixpath.join(posixpath.dirname(rel), file_part))
        if target_rel.startswith("../") or posixpath.isabs(target_rel):
            raise ConfigError(f"schemas/{rel}: $ref {ref!r} leaves the schema directory.")
        node: Any = self.read(target_rel)
        for token in (t for t in pointer.split("/") if t):
            token = token.replace("~1", "/").replace("~0", "~")
            if not isinstance(node, dict) or token not in node:
                raise ConfigError(f"schemas/{rel}: $ref {ref!r} does not resolve.")
            node = node[token]
        return target_rel, node
