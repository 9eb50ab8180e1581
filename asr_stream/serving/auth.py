"""API keys of ``asr-stream serve`` and of its clients (docs/protocol.md, "Keys and TLS").

The server's keys come from ``--api-key-file`` (one key a line; blank lines and lines starting with ``#`` are skipped)
and the ``ASR_STREAM_API_KEY`` environment variable (one key); with neither, no key is asked for. A request
presents its key as ``Authorization: Bearer KEY`` or, for the browser page (which cannot set headers on a WebSocket),
as the query parameter ``?api_key=KEY``. Keys are compared in constant time (:func:`hmac.compare_digest` on SHA-256
digests, so that neither a key's content nor its length shows in the time taken, and every key is compared).
The clients (``asr-stream client``, ``mic --url``) send the key of the same variable, or the first key of their own
``--api-key-file``.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from pathlib import Path
from typing import Mapping, Optional

ENV = "ASR_STREAM_API_KEY"
QUERY = "api_key"


def read_keys(path: str | os.PathLike) -> list[str]:
    """The keys of a key file; ValueError (one line) when it cannot be read or holds none."""
    p = Path(path)
    try:
        text = p.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"--api-key-file {p}: cannot read it ({getattr(e, 'strerror', None) or type(e).__name__})") from None
    keys = [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]
    if not keys:
        raise ValueError(f"--api-key-file {p}: no key in it (one key a line)")
    bad = [i for i, k in enumerate(keys) if any(ch.isspace() for ch in k) or not k.isprintable()]
    if bad:
        raise ValueError(f"--api-key-file {p}: key {bad[0] + 1} has spaces or unprintable characters")
    return keys


def server_keys(path: Optional[str], env: Mapping[str, str] = os.environ) -> "Keys":
    """The keys a server asks for: those of ``path`` and of :data:`ENV` (none: no key is asked for)."""
    keys = read_keys(path) if path is not None else []
    if env.get(ENV, "").strip():
        keys.append(env[ENV].strip())
    return Keys(keys)


def client_key(path: Optional[str], env: Mapping[str, str] = os.environ) -> Optional[str]:
    """The key a client sends: the first of ``path`` (its ``--api-key-file``), else :data:`ENV`, else None."""
    if path is not None:
        return read_keys(path)[0]
    return env.get(ENV, "").strip() or None


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8", "surrogateescape")).digest()


class Keys:
    """The keys a server accepts (empty: every request is let in)."""

    def __init__(self, keys: list[str]) -> None:
        self._digests = [_digest(k) for k in keys]

    def __bool__(self) -> bool:
        return bool(self._digests)

    def __len__(self) -> int:
        return len(self._digests)

    def allows(self, headers: Mapping[str, str], query: Mapping[str, str]) -> bool:
        """True when no key is asked for, or the request presents one of the keys (a Bearer token, else ``api_key``)."""
        if not self._digests:
            return True
        auth = headers.get("Authorization", "")
        scheme, _, token = auth.partition(" ")
        key = token.strip() if scheme.lower() == "bearer" else query.get(QUERY, "")
        if not key:
            return False
        d = _digest(key)
        ok = False
        for k in self._digests:  # every key compared: the time does not say which one matched
            ok |= hmac.compare_digest(d, k)
        return ok


__all__ = ["ENV", "Keys", "QUERY", "client_key", "read_keys", "server_keys"]
