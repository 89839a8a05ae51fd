"""The HTTP server: ``rlm serve`` (see :mod:`contextbox.server.app`)."""

from .app import create_app

__all__ = ["create_app"]
