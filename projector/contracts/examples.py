"""The labelled example messages in ``schemas/examples`` (see its README)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from projector.contracts.registry import SCHEMA_DIR
from projector.errors import ConfigError
from projector.events import RejectReason


@dataclass(frozen=True, slots=True)
class Example:
    name: str  # file name without .json
    value: bytes
    key: bytes | None
    expect: RejectReason | None  # None: must decode to an Event
    event_type: str | None  # valid examples: the type named by the file
    version: int | None  # valid examples: the schema version named by the file


def load_examples(schema_dir: Path = SCHEMA_DIR) -> list[Example]:
    """Every example, valid ones first, each group sorted by name."""
    out: list[Example] = []
    for group in ("valid", "invalid"):
        directory = schema_dir / "examples" / group
        if not directory.is_dir():
            raise ConfigError(f"Example directory {directory} not found.")
        for path in sorted(directory.glob("*.json")):
            name = path.name.removesuffix(".json")
            key_path = path.with_name(name + ".key")
            key = key_path.read_bytes() if key_path.exists() else None
            head, _, rest = name.partition(".")
            if group == "valid":
                version = rest.partition(".")[0]
                if not (version.startswith("v") and version[1:].isdigit()):
                    raise ConfigError(f"{path}: valid examples are named <EventType>.v<N>[.<variant>].json")
                out.append(Example(name, path.read_bytes(), key, None, head, int(version[1:])))
            else:
                try:
                    reason = RejectReason(head)
                except ValueError:
                    raise ConfigError(f"{path}: invalid examples are named <reason>.<what>.json") from None
                out.append(Example(name, path.read_bytes(), key, reason, None, None))
    return out
