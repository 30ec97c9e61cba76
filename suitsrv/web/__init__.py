"""The web layer: one module per audience, over the service layer."""

from .app import Route, create_app

__all__ = ["Route", "create_app"]
