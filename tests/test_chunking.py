"""Splitting long replies for platforms with size limits."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from channels.chunking import split_text


def test_short_text_is_one_part() -> None:
    assert split_text("hello", 10) == ["hello"]


def test_splits_on_line_boundaries() -> None:
    text = "aaaa\nbbbb\ncccc"
    assert split_text(text, 10) == ["aaaa\nbbbb", "cccc"]


def test_cuts_an_over_long_line() -> None:
    assert split_text("x" * 25, 10) == ["x" * 10, "x" * 10, "x" * 5]


@given(st.text(min_size=1, max_size=500), st.integers(min_value=5, max_value=60))
def test_parts_respect_the_limit_and_keep_the_content(text: str, limit: int) -> None:
    parts = split_text(text, limit)
    assert all(len(p) <= limit for p in parts)
    # Only line breaks may move or vanish at part boundaries, never content.
    assert "".join("".join(parts).splitlines()) == "".join(text.splitlines())


def test_telegram_limits_count_utf16_units() -> None:
    from channels.chunking import utf16_len

    text = "😀" * 3000  # 3,000 characters, 6,000 UTF-16 units
    parts = split_text(text, 4096, utf16_len)
    assert all(utf16_len(p) <= 4096 for p in parts)
    assert "".join(parts) == text
