"""The suitsrv service: the only ring with I/O (storage, HTTP, CLI, device agent)."""

__version__ = "0.1.0"

__all__ = ["__version__"]
