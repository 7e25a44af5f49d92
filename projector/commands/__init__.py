"""CLI subcommands, one module each (see projector.cli)."""
