"""API keys for the OpenAI-compatible server.

Keys come from ``$MOATFORGE_API_KEYS`` (comma-separated) and/or a file (one per line, ``#`` comments), read where
the app is built and again inside each replica (a remote cluster may hold the variable only there). Only SHA-256
digests travel in the deployment's arguments, so the Serve dashboard and config dumps never show a usable key.
A server with no key refuses to start unless ``allow_unauthenticated`` says otherwise: an open server is a choice
made for local development, never an accident of a missing variable.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from pathlib import Path

from moatforge.errors import MoatforgeError

API_KEYS_ENV = "MOATFORGE_API_KEYS"


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def read_key_digests(api_keys_file: str | None) -> set[str]:
    keys = [k.strip() for k in os.environ.get(API_KEYS_ENV, "").split(",")]
    if api_keys_file:
        path = Path(os.path.expanduser(api_keys_file))
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise MoatforgeError(f"serve.api_keys_file {api_keys_file}: cannot read it ({exc.strerror})") from None
        keys += [line.strip() for line in text.splitlines() if not line.strip().startswith("#")]
    return {digest(k) for k in keys if k}


def require_keys_or_open(digests: set[str], allow_unauthenticated: bool) -> None:
    if not digests and not allow_unauthenticated:
        raise MoatforgeError(
            f"no API keys configured: set {API_KEYS_ENV}=key1,key2 or serve.api_keys_file=PATH, "
            "or serve.allow_unauthenticated=true to run an open server for local development"
        )


class KeyChecker:
    def __init__(self, digests: set[str], allow_unauthenticated: bool):
        self.digests = sorted(digests)
        self.open = allow_unauthenticated and not digests

    def check(self, authorization: str | None) -> bool:
        if self.open:
            return True
        if not authorization:
            return False
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return False
        presented = digest(token.strip())
        # Compare against every digest so the time taken does not reveal which (or whether any) key matched early.
        found = False
        for d in self.digests:
            found |= hmac.compare_digest(presented, d)
        return found
