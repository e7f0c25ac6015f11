"""Shared vocabulary of Switchboard: models, settings, IDs, codec, tokens and the CLI."""
