"""Every example in schemas/examples is decoded exactly as its file name says."""

from __future__ import annotations

import json
import re
from datetime import timedelta
from pathlib import Path

import pytest

from projector.contracts import SCHEMA_DIR, Decoder, default_decoder
from projector.contracts.examples import Example, load_examples
from projector.events import EVENT_TYPES, TOPIC_OF, Event, Rejection, RejectReason

EXAMPLES = load_examples()
VALID = [e for e in EXAMPLES if e.expect is None]
INVALID = [e for e in EXAMPLES if e.expect is not None]


@pytest.fixture(scope="module")
def decoder() -> Decoder:
    return default_decoder()


@pytest.mark.parametrize("example", VALID, ids=lambda e: e.name)
def test_valid_example_decodes(decoder: Decoder, example: Example) -> None:
    result = decoder.decode(example.value, example.key)
    assert isinstance(result, Event), result
    assert result.event_type == example.event_type
    assert result.schema_version == decoder.current_versions[result.event_type]
    assert result.occurred_at.utcoffset() == timedelta(0)
    assert result.payload["order_id"] == result.order_id
    # Keyed by its order id, as most producers send it: the same Event.
    assert decoder.decode(example.value, result.order_id.encode()) == result


@pytest.mark.parametrize("example", INVALID, ids=lambda e: e.name)
def test_invalid_example_is_rejected_with_its_reason(decoder: Decoder, example: Example) -> None:
    result = decoder.decode(example.value, example.key)
    assert isinstance(result, Rejection), result
    assert result.reason is example.expect, result.detail
    assert result.raw == example.value
    assert result.key == example.key
    assert result.detail


def test_every_type_has_a_contract_and_examples(decoder: Decoder) -> None:
    assert set(decoder.current_versions) == set(EVENT_TYPES)
    assert {e.event_type for e in VALID} == set(EVENT_TYPES)
    for event_type in EVENT_TYPES:
        assert any(re.search(rf"\b{event_type}\b", e.name) for e in INVALID), event_type
    # Every non-current version has a valid example too (it exercises the upcaster).
    for event_type, version in decoder.catalogue.contracts:
        assert any(e.event_type == event_type and e.version == version for e in VALID), (
            event_type, version)


def test_every_decoder_reason_has_an_example() -> None:
    decoder_reasons = set(RejectReason) - {RejectReason.PROJECTION_ERROR}
    assert {e.expect for e in INVALID} == decoder_reasons


def test_schema_files_declare_2020_12_and_their_id() -> None:
    files = [SCHEMA_DIR / "common.json", SCHEMA_DIR / "envelope.json",
             *sorted((SCHEMA_DIR / "events").glob("*.json"))]
    for path in files:
        schema = json.loads(path.read_text())
        assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema", path
        rel = path.relative_to(SCHEMA_DIR).as_posix()
        assert schema["$id"] == f"https://projector.example/schemas/{rel}", path


def test_readme_catalogue_matches_the_schemas(decoder: Decoder) -> None:
    readme = (SCHEMA_DIR / "README.md").read_text()
    rows = {
        m["type"]: (int(m["version"]), m["topic"])
        for m in re.finditer(
            r"^\| (?P<type>[A-Za-z]+) \| (?P<version>\d+) \| `(?P<topic>[^`]+)` \|", readme, re.M
        )
    }
    assert rows == {t: (decoder.current_versions[t], TOPIC_OF[t]) for t in EVENT_TYPES}


def test_examples_directory_has_only_labelled_files() -> None:
    for path in Path(SCHEMA_DIR / "examples").rglob("*"):
        if path.is_file():
            assert path.suffix in (".json", ".key", ".md"), path
