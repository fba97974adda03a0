"""Serving the student on Ray Serve behind an OpenAI-compatible API (``moatforge.serve:build_app``).

``build_app`` is resolved lazily so that importing the batching engine or the schema (unit tests, benchmarks)
does not pull in Ray Serve and FastAPI.
"""

from __future__ import annotations


def __getattr__(name: str):
    if name == "build_app":
        from moatforge.serve.app import build_app

        return build_app
    raise AttributeError(name)


__all__ = ["build_app"]
