"""The device agent: a real client of the service over HTTP, with its TPM through tpm2-pytss
(docs/agent.md). It enrolls its AK by credential activation, polls, downloads with resume,
verifies manifests itself against the vendor key it was provisioned with, installs into an
A/B slot, measures the boot into a PCR and its compact event log, reports, attests, and
backs up and restores its configuration file.

tpm2-pytss (and Debian's libtss2) is what a device needs and the service does not, so the
names below load on first use: ``suitsrv serve`` imports the CLI, which imports this package,
and must work on a host without a TSS.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .agent import Agent, Identity, Verdict
    from .checks import Component, InstallPlan, check_manifest
    from .config import AgentConfig, load_agent_config
    from .download import DownloadStats
    from .errors import (
        AgentConfigError,
        AgentError,
        DownloadError,
        ManifestRefused,
        ServerError,
        TpmError,
    )
    from .measure import BootRecord
    from .state import DeviceState
    from .update import PollResult, PollStatus
    from .vault import BackupResult, RestoreResult

_MODULES = {
    "Agent": "agent", "Identity": "agent", "Verdict": "agent",
    "Component": "checks", "InstallPlan": "checks", "check_manifest": "checks",
    "AgentConfig": "config", "load_agent_config": "config",
    "DownloadStats": "download",
    "AgentConfigError": "errors", "AgentError": "errors", "DownloadError": "errors",
    "ManifestRefused": "errors", "ServerError": "errors", "TpmError": "errors",
    "BootRecord": "measure",
    "DeviceState": "state",
    "PollResult": "update", "PollStatus": "update",
    "BackupResult": "vault", "RestoreResult": "vault",
}  # fmt: skip

__all__ = [
    "Agent",
    "AgentConfig",
    "AgentConfigError",
    "AgentError",
    "BackupResult",
    "BootRecord",
    "Component",
    "DeviceState",
    "DownloadError",
    "DownloadStats",
    "Identity",
    "InstallPlan",
    "ManifestRefused",
    "PollResult",
    "PollStatus",
    "RestoreResult",
    "ServerError",
    "TpmError",
    "Verdict",
    "check_manifest",
    "load_agent_config",
]


def __getattr__(name: str) -> object:
    module = _MODULES.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{module}", __name__), name)
