"""The history on a Redis server (the one ``--tl-store`` uses): one list per test id.

A run's rows are pushed in one ``MULTI``/``EXEC`` transaction (``RPUSH`` to each test's list and
``SADD`` of the id to the set of tests), so concurrent runs interleave whole rows and lose none.
"""

from __future__ import annotations

import json

from . import HistoryError

PREFIX = "tlautotune:history:"
TESTS = PREFIX + "tests"


class RedisHistory:
    def __init__(self, url: str, timeout: float = 3.0):
        try:
            import redis
        except ImportError:
            raise HistoryError("a redis:// history needs redis-py: pip install pytest-tlautotune[redis]") from None
        self.url = url
        self._errors = (redis.RedisError, OSError)
        self.client = redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)

    def append(self, rows: list[dict]) -> None:
        if not rows:
            return
        try:
            pipe = self.client.pipeline(transaction=True)
            for r in rows:
                pipe.rpush(PREFIX + r["test"], json.dumps(r, sort_keys=True))
                pipe.sadd(TESTS, r["test"])
            pipe.execute()
        except self._errors as exc:
            raise HistoryError(f"could not append to the history at {_safe(self.url)} ({exc})") from None

    def read(self, test: str | None = None, since: float | None = None) -> list[dict]:
        try:
            tests = [test] if test is not None else sorted(t.decode() for t in self.client.smembers(TESTS))
            out = []
            for name in tests:
                for raw in self.client.lrange(PREFIX + name, 0, -1):
                    try:
                        row = json.loads(raw)
                    except ValueError:
                        continue  # not a row this plugin wrote: skipped, never fatal
                    if isinstance(row, dict) and row.get("date", 0) >= (since or 0):
                        out.append(row)
        except self._errors as exc:
            raise HistoryError(f"could not read the history at {_safe(self.url)} ({exc})") from None
        return sorted(out, key=lambda r: r.get("date", 0))

    def close(self) -> None:
        self.client.close()


def _safe(url: str) -> str:
    """The URL without its password."""
    if "@" not in url:
        return url
    scheme, rest = url.split("://", 1)
    return f"{scheme}://***@{rest.split('@', 1)[1]}"
