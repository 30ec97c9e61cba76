"""Fuzzing harness (docs/fuzzing.md): atheris targets per decoder, schemathesis against the
running service, and long-running hypothesis properties. Run it with ``scripts/fuzz``.

Nothing here is imported by the product; this package must not import our rings at import
time (the atheris runner instruments them first).
"""
