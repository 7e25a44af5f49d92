"""Settings from the environment: documented, checked, and named in errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from projector.errors import ConfigError
from projector.settings import _ENV, Settings

README = Path(__file__).resolve().parent.parent / "README.md"


def test_every_variable_is_in_the_readme_configuration_table() -> None:
    table = README.read_text().split("## Configuration", 1)[1].split("\n## ", 1)[0]
    missing = [var for var, _, _ in _ENV.values() if f"`{var}`" not in table]
    assert not missing, f"README's Configuration table lacks {missing}"


def test_values_are_parsed_and_a_bad_one_is_named() -> None:
    settings = Settings.from_env({"PROJECTOR_FETCH_MAX_WAIT_MS": "25",
                                  "PROJECTOR_BATCH_MAX_EVENTS": " 800 "})
    assert (settings.fetch_max_wait_ms, settings.batch_max_events) == (25, 800)
    assert Settings.from_env({}).fetch_max_wait_ms == 30
    with pytest.raises(ConfigError, match="PROJECTOR_FETCH_MAX_WAIT_MS='soon' is not valid"):
        Settings.from_env({"PROJECTOR_FETCH_MAX_WAIT_MS": "soon"})
    with pytest.raises(ConfigError, match=r"milliseconds 1\.\.60000"):
        Settings.from_env({"PROJECTOR_FETCH_MAX_WAIT_MS": "0"})
