"""Rows of strings as aligned columns, the form `lamina models` and `lamina jobs` print."""

from __future__ import annotations


def print_table(rows: list[dict[str, str]]) -> None:
    widths = {key: max(len(key), *(len(row[key]) for row in rows)) for key in rows[0]}
    print("  ".join(key.ljust(width) for key, width in widths.items()).rstrip())
    for row in rows:
        print("  ".join(row[key].ljust(width) for key, width in widths.items()).rstrip())
