"""Latency-regression gate (filled in by the gate work)."""

from __future__ import annotations


def check_item(item) -> None:
    return None


def finish_session(config, rows, session) -> None:
    return None


def gate_lines(rows) -> list[str]:
    return []
