"""TLS for ``asr-stream serve`` (``--certfile`` / ``--keyfile``): the server's SSL context, checked at start."""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Optional


def server_context(certfile: Optional[str], keyfile: Optional[str]) -> Optional[ssl.SSLContext]:
    """A TLS server context (TLS 1.2 or later) from a PEM certificate chain and its key; None when neither is given.
    ValueError (one line) for one without the other, a missing file, or a key that does not fit the certificate."""
    if certfile is None and keyfile is None:
        return None
    if certfile is None or keyfile is None:
        raise ValueError("--certfile and --keyfile go together (a PEM certificate chain and its private key)")
    for flag, path in (("--certfile", certfile), ("--keyfile", keyfile)):
        if not Path(path).is_file():
            raise ValueError(f"{flag} {path}: no such file")
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(certfile, keyfile)
    except ssl.SSLError as e:
        raise ValueError(f"--certfile {certfile} / --keyfile {keyfile}: {e.reason or e}") from None
    return ctx


__all__ = ["server_context"]
