"""The agent's exceptions: one tree, each naming what failed in words an operator can act on.

The agent is a client, so there is no HTTP status to hint at; the CLI maps the tree to exit
codes instead: ``AgentConfigError`` is a usage error (2), every other ``AgentError`` a
failure (1).
"""

from __future__ import annotations

from manifests import Digest
from manifests.numbers import ReportReason

__all__ = [
    "AgentConfigError",
    "AgentError",
    "DownloadError",
    "ManifestRefused",
    "ServerError",
    "TpmError",
]


class AgentError(Exception):
    """Something the agent could not do."""


class AgentConfigError(AgentError):
    """The agent's configuration file (or a file it names) is unusable."""


class ServerError(AgentError):
    """The service answered with an error (RFC 9457 problem+json when it could)."""

    def __init__(self, what: str, status: int, problem: str, detail: str) -> None:
        super().__init__(f"{what}: HTTP {status} {problem}: {detail}".rstrip(": "))
        self.status = status
        self.problem = problem
        self.detail = detail


class DownloadError(AgentError):
    """A payload download did not finish; the partial file is kept for the next attempt."""


class TpmError(AgentError):
    """The TPM could not be reached or refused a command."""


class ManifestRefused(AgentError):
    """The agent will not install this manifest. ``digest`` is set when the envelope parsed,
    so a SUIT report can name it; ``permanent`` refusals are remembered so the same manifest
    is not downloaded again (a failed image check is not: the next download may be sound)."""

    def __init__(
        self,
        reason: str,
        *,
        code: ReportReason,
        command: int = 0,
        section: int = 0,
        component: int = 0,
        digest: Digest | None = None,
        reference_uri: str = "",
        permanent: bool = True,
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.code = code
        self.command = command
        self.section = section
        self.component = component
        self.digest = digest
        self.reference_uri = reference_uri
        self.permanent = permanent
