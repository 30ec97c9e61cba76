"""One update cycle: poll, check the manifest, download with resume, install into the inactive
slot, boot it, report (docs/agent.md). The service is asked only over HTTP:

* ``GET /v1/device/update`` with ``If-None-Match`` listing the installed manifest and the ones
  refused before: 204 nothing for us, 304 nothing new, 200 the envelope (exact bytes);
* ``GET /v1/payloads/{sha256}`` for each image: the service keeps every payload a release
  fetches by URI under its digest, and the digest, not the host in the URI, names the image;
* ``POST /v1/device/reports``: a SUIT_Report (report-20) of the outcome, success or the
  condition that failed. It is written to the state folder first and sent until the service
  has taken it, because the service offers updates by what a device *reported* installing.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass
from enum import StrEnum

import aiohttp

from manifests import (
    Digest,
    Record,
    ReportResult,
    SystemPropertyClaims,
    build_report,
    parse_envelope,
    sign_report,
)
from manifests.numbers import Command, ManifestKey, Parameter, ReportReason

from .checks import InstallPlan, check_manifest
from .client import Context, check_json, raise_problem
from .download import DownloadStats, ImageMismatch, download, store_integrated
from .errors import ManifestRefused, ServerError
from .measure import BootRecord, boot
from .state import component_file

__all__ = ["PollResult", "PollStatus", "flush_pending_report", "poll_once"]

_REPORT_TYPE = "application/suit-report+cose"
_MAX_ENVELOPE = 1 << 20  # the service's default limit for envelopes


class PollStatus(StrEnum):
    NONE = "none"  # 204: no release newer than the one reported installed
    CURRENT = "current"  # 304: the newest release is installed, or was refused before
    INSTALLED = "installed"
    REFUSED = "refused"


@dataclass(frozen=True)
class PollResult:
    """What one poll did; ``poll_interval`` is the service's hint in seconds, if it gave one."""

    status: PollStatus
    poll_interval: int | None
    digest: str | None = None
    sequence_number: int | None = None
    slot: str | None = None
    reason: str | None = None
    downloads: tuple[DownloadStats, ...] = ()
    boot: BootRecord | None = None


def _interval(value: str | None) -> int | None:
    try:
        return max(int(value), 0) if value is not None else None
    except ValueError:
        return None


async def flush_pending_report(ctx: Context) -> None:
    """Send the report waiting in the state folder, if any. A 4xx drops it (the service
    will never take it); a 5xx or a network error keeps it for the next cycle."""
    data = ctx.state.pending_report()
    if data is None:
        return
    headers = {"Content-Type": _REPORT_TYPE}
    async with ctx.session.post(ctx.config.url("/v1/device/reports"), data=data,
                                headers=headers) as resp:  # fmt: skip
        if resp.status >= 500:
            await raise_problem(resp, "report")
        try:
            body = await check_json(resp, "report", 201)
        except ServerError as exc:
            ctx.say(f"report: dropped, the service refuses it: {exc.detail}")
        else:
            outcome = "success" if body.get("success") else "failure"
            ctx.say(f"report: {outcome} recorded by the service (report {body.get('report_id')})")
    ctx.state.save_pending_report(None)


async def _report(
    ctx: Context,
    digest: Digest,
    reference_uri: str,
    result: ReportResult,
    claims: tuple[SystemPropertyClaims, ...] = (),
) -> None:
    report = build_report(reference_uri=reference_uri, manifest_digest=digest, records=claims,
                          result=result)  # fmt: skip
    if ctx.config.report_key is not None:
        report = sign_report(report, ctx.config.report_key)
    ctx.state.save_pending_report(report)
    try:
        await flush_pending_report(ctx)
    except (ServerError, aiohttp.ClientError, TimeoutError) as exc:
        ctx.say(f"report: kept for the next poll ({exc or type(exc).__name__})")


async def _refused(ctx: Context, exc: ManifestRefused, interval: int | None) -> PollResult:
    ctx.say(f"verify: refused: {exc.reason}")
    digest = exc.digest
    if digest is not None:
        if exc.permanent:
            ctx.state.add_refused(ctx.config.vendor_key_sha256, digest.hex)
        record = Record((), exc.section, 0, exc.component, {})
        result = ReportResult(False, int(exc.command), record, exc.code)
        await _report(ctx, digest, exc.reference_uri, result)
    return PollResult(PollStatus.REFUSED, interval, digest.hex if digest else None,
                      reason=exc.reason)  # fmt: skip


async def _fetch(ctx: Context, plan: InstallPlan) -> tuple[DownloadStats, ...]:
    """Each image into its partial file; ManifestRefused when one is not the manifest's."""
    stats: list[DownloadStats] = []
    for component in plan.components:
        sha256, size = component.digest.hex, component.size
        partial = ctx.state.partial_path(sha256)
        name = component_file(component.component_id).removesuffix(".img")
        try:
            if component.integrated is not None:
                store_integrated(partial, component.integrated)
            url = ctx.config.url(f"/v1/payloads/{sha256}")
            got = await download(ctx.session, url, partial, sha256=sha256, size=size,
                                 max_bytes_per_request=ctx.max_bytes_per_request)  # fmt: skip
        except ImageMismatch as exc:
            partial.unlink(missing_ok=True)
            raise ManifestRefused(
                f"component {component.index} ({name}): {exc}", code=ReportReason.CONDITION_FAILED,
                command=Command.IMAGE_MATCH, section=ManifestKey.INSTALL,
                component=component.index, digest=plan.digest, reference_uri=plan.reference_uri,
                permanent=False,
            ) from exc  # fmt: skip
        resumed = [offset for offset, _ in got.requests if offset]
        how = f", resumed at byte {resumed[0]}" if resumed else ""
        ctx.say(f"download {name}: {size} bytes in {len(got.requests)} request(s){how}; "
                f"SHA-256 {sha256[:16]}… matches the manifest")  # fmt: skip
        stats.append(got)
    return tuple(stats)


def _install(ctx: Context, plan: InstallPlan, slot: str) -> None:
    """Move the checked images into ``slot``, write its manifest, make it the boot slot."""
    ctx.state.clear_slot(slot)
    for component in plan.components:
        partial = ctx.state.partial_path(component.digest.hex)
        os.replace(partial, ctx.state.image_path(slot, component.component_id))
    ctx.state.commit_slot(slot, plan.verified.raw)


def _claims(plan: InstallPlan) -> tuple[SystemPropertyClaims, ...]:
    # report-20 system-property-claims: what is now installed, per component.
    claims = []
    for c in plan.components:
        values = {int(Parameter.IMAGE_DIGEST): c.digest.to_cbor_value(),
                  int(Parameter.IMAGE_SIZE): c.size}  # fmt: skip
        claims.append(SystemPropertyClaims(c.component_id, values))
    return tuple(claims)


async def poll_once(ctx: Context) -> PollResult:
    """Ask for an update and, when there is one for us, install and report it."""
    await flush_pending_report(ctx)
    config, state = ctx.config, ctx.state
    installed = state.installed_envelope()
    tags = [parse_envelope(installed).digest.hex] if installed else []
    tags += state.refused(config.vendor_key_sha256)
    headers = {"If-None-Match": ", ".join(f'"{t}"' for t in tags)} if tags else {}
    async with ctx.session.get(config.url("/v1/device/update"), headers=headers) as resp:
        interval = _interval(resp.headers.get("Poll-Interval"))
        if resp.status == 204:
            ctx.say("poll: no update for this device")
            return PollResult(PollStatus.NONE, interval)
        if resp.status == 304:
            ctx.say(f"poll: nothing new (running {tags[0][:16]}…)" if installed
                    else "poll: nothing new")  # fmt: skip
            return PollResult(PollStatus.CURRENT, interval)
        if resp.status != 200:
            await raise_problem(resp, "poll")
        data = await resp.content.read(_MAX_ENVELOPE + 1)
    if len(data) > _MAX_ENVELOPE:
        raise ServerError("poll", 200, "", f"the envelope exceeds {_MAX_ENVELOPE} bytes")
    try:
        plan = check_manifest(data, config.vendor_anchor, vendor_id=config.vendor_id,
                              class_id=config.class_id, installed=installed,
                              now=ctx.clock())  # fmt: skip
    except ManifestRefused as exc:
        return await _refused(ctx, exc, interval)
    digest, sequence = plan.digest.hex, plan.sequence_number
    if plan.already_installed:  # our earlier report may not have arrived: say it again
        ctx.say(f"poll: manifest {digest[:16]}… is the one installed; reporting it again")
        await _report(ctx, plan.digest, plan.reference_uri, ReportResult(True), _claims(plan))
        return PollResult(PollStatus.CURRENT, interval, digest, sequence)
    ctx.say(f"verify: manifest {digest[:16]}… sequence {sequence} is authentic "
            f"(signed by {', '.join(plan.verified.signers)}) and for this device")  # fmt: skip
    try:
        stats = await _fetch(ctx, plan)
    except ManifestRefused as exc:
        return await _refused(ctx, exc, interval)
    slot = state.inactive_slot()
    await asyncio.to_thread(_install, ctx, plan, slot)
    ctx.say(f"install: {len(plan.components)} component(s) into slot {slot}, now the boot slot")
    record = await asyncio.to_thread(boot, config, state)
    ctx.say(boot_line(record))
    await _report(ctx, plan.digest, plan.reference_uri, ReportResult(True), _claims(plan))
    return PollResult(PollStatus.INSTALLED, interval, digest, sequence, slot, None, stats, record)


def boot_line(record: BootRecord) -> str:
    """The one line a boot prints."""
    what = (f"manifest {record.manifest_digest[:16]}… sequence {record.sequence_number}"
            if record.manifest_digest else "no manifest installed")  # fmt: skip
    missing = f"; MISSING {', '.join(record.missing)}" if record.missing else ""
    return (f"boot: slot {record.slot} ({what}): {len(record.events)} image(s) measured into "
            f"PCR{record.pcr} = {record.pcr_value.hex()[:16]}…{missing}")  # fmt: skip
