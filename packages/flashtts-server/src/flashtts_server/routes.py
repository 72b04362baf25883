"""All API routers, included by create_app."""

from __future__ import annotations

from fastapi import FastAPI


def include_routes(app: FastAPI) -> None:
    """The API issue adds the native, OpenAI-compatible and role routes and the web page here."""
