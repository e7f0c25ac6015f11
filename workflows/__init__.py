"""Deterministic orchestration: sessions and runs. No I/O, clocks or randomness here."""
