"""Backups: create (as a job), list, details, download, verify (as a job), delete, stats.

Readers (SYSTEM_ADMIN, AUDITOR) may list backups and see details and statistics; every other
endpoint is SYSTEM_ADMIN only. A download is one deterministic tar with ``Content-Length``,
a strong ``ETag`` (the backup's checksum) and single ``Range`` requests with ``If-Range``,
so an interrupted download resumes where it stopped.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Mapping
from dataclasses import replace
from email.utils import format_datetime
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Body, Depends, Header, Path, Query, Request, Response, status
from fastapi.responses import JSONResponse, StreamingResponse

from clinvault.api.deps import ContextDep, client_address, request_id
from clinvault.api.problems import problem
from clinvault.api.schemas.backups import (
    BackupCreateIn,
    BackupDeleteIn,
    BackupDetailOut,
    BackupOut,
    BackupPage,
    BackupStatsOut,
)
from clinvault.api.schemas.jobs import JobAccepted
from clinvault.api.security import AdminDep, Principal, ReaderDep, SignatureIn
from clinvault.catalog.models import AuditOutcome, Backup, BackupStatus, BackupType, Signature
from clinvault.errors import ClinVaultError, InvalidInputError, PermissionDeniedError
from clinvault.services.context import ServiceContext
from clinvault.services.deletion import BackupDeletion, DeleteRequest
from clinvault.services.download import RangeNotSatisfiableError, start_download
from clinvault.services.job_handlers import BACKUP_CREATE, BACKUP_VERIFY
from clinvault.services.jobs import JobService
from clinvault.services.queries import get_backup
from clinvault.services.signatures import SignatureService
from clinvault.services.stats import (
    BackupQuery,
    SortColumn,
    backup_details,
    backup_stats,
    listed_json,
    page_backups,
    printable,
)

router = APIRouter(prefix="/backup", tags=["backups"])

DELETE_MEANING = "Approved deletion"
_JSON = "application/json"
_JOB_RESPONSES: dict[int | str, dict[str, Any]] = {
    202: {"description": "Accepted: the job is queued; follow it at `links.job`."}
}


def get_backup_or_404(
    backup_id: Annotated[uuid.UUID, Path(description="The backup's id.")], ctx: ContextDep
) -> Backup:
    """The backup named in the path, or 404."""
    return get_backup(ctx, backup_id)


BackupDep = Annotated[Backup, Depends(get_backup_or_404)]


def accepted(request: Request, response: Response, job: Any, **extra: Any) -> JobAccepted:
    """The 202 answer for a queued job, with its ``Location``."""
    path = request.url_for("get_job", job_id=str(job.id)).path
    response.headers["Location"] = path
    return JobAccepted.of(job, path, **extra)


def require_signature(
    ctx: ServiceContext,
    principal: Principal,
    request: Request,
    *,
    signature: SignatureIn | None,
    signature_id: uuid.UUID | None,
    operation: Mapping[str, Any],
    meaning: str,
) -> Signature:
    """Sign ``operation`` now, or apply a presigned signature to it; else refuse.

    Every refusal is audited under the operation's action, besides what the signature
    service records itself.
    """
    signatures = SignatureService(ctx)
    origin = {"client_address": client_address(request), "request_id": request_id(request)}
    try:
        if signature is not None and signature_id is not None:
            raise InvalidInputError("signature: give a signature or a signature_id, not both")
        if signature is not None:
            return signatures.sign(
                principal,
                signature.username,
                signature.password.get_secret_value(),
                signature.meaning,
                signature.reason,
                operation,
                required_meaning=meaning,
                **origin,
            )
        if signature_id is not None:
            return signatures.consume(
                signature_id, principal, operation, required_meaning=meaning, **origin
            )
        raise PermissionDeniedError(
            f"{operation['action']} needs an electronic signature with the meaning {meaning!r}"
        )
    except ClinVaultError as exc:
        actor = principal.actor()
        ctx.audit.record(
            str(operation["action"]),
            actor_id=actor.id,
            actor_name=actor.name,
            outcome=AuditOutcome.DENIED,
            target_type=str(operation.get("target_type")),
            target_id=str(operation.get("target_id")),
            details={"operation": dict(operation), "problem": exc.message},
            **origin,
        )
        raise


@router.post(
    "/create",
    status_code=status.HTTP_202_ACCEPTED,
    summary="Start a backup",
    responses={**_JOB_RESPONSES, 409: {"description": "Name taken, or a restore is running"}},
)
def create_backup(
    principal: AdminDep,
    body: BackupCreateIn,
    ctx: ContextDep,
    request: Request,
    response: Response,
) -> JobAccepted:
    """Queue a backup and answer at once with its job; the request is checked first (a bad
    level, a taken name or a running restore is refused now, not as a failed job)."""
    job = JobService(ctx).submit(
        BACKUP_CREATE,
        body.model_dump(mode="json"),
        principal.actor(),
        request_id=request_id(request),
        client_address=client_address(request),
    )
    return accepted(request, response, job)


@router.get("/list", summary="List backups", response_model=BackupPage)
def list_backups(
    _: ReaderDep,
    ctx: ContextDep,
    page: Annotated[int, Query(ge=1, le=1_000_000)] = 1,
    page_size: Annotated[int, Query(ge=1, le=200)] = 50,
    type: Annotated[BackupType | None, Query(description="Only this type.")] = None,
    status: Annotated[BackupStatus | None, Query(description="Only this status.")] = None,
    search: Annotated[
        str | None, Query(max_length=255, description="Part of the name (case-insensitive).")
    ] = None,
    sort: Annotated[SortColumn, Query(description="Column to sort by.")] = "created_at",
    order: Annotated[str, Query(pattern="^(asc|desc)$")] = "desc",
    include_deleted: bool = False,
) -> Response:
    """Backups one page at a time, filtered by type and status, searched by name, sorted by
    any column (newest first by default). Soft-deleted backups only on request."""
    query = BackupQuery(
        page=page,
        page_size=page_size,
        type=type,
        status=status,
        search=search,
        sort=sort,
        descending=order == "desc",
        include_deleted=include_deleted,
    )
    # The hot path: the records go to orjson as read (it writes datetimes, UUIDs and enums
    # as the API's models do) instead of being converted, validated against the declared
    # response model and encoded by the standard library: a quarter of a list request's CPU.
    items, total = page_backups(ctx, query, json_ready=False)
    pages = math.ceil(total / page_size)
    body = {"items": items, "total": total, "page": page, "page_size": page_size, "pages": pages}
    try:
        return Response(orjson.dumps(body, option=orjson.OPT_UTC_Z), media_type=_JSON)
    except orjson.JSONEncodeError:  # text orjson refuses (lone surrogates): the careful way
        converted = [listed_json(item) for item in items]
        return JSONResponse(printable({**body, "items": converted}))


@router.get("/stats", summary="Backup statistics")
def stats(
    _: ReaderDep,
    ctx: ContextDep,
    days: Annotated[int, Query(ge=1, le=366, description="Days of usage history.")] = 30,
) -> BackupStatsOut:
    """Totals, storage used and saved by compression, the last backup, the next scheduled
    one, and storage used at the end of each day."""
    return BackupStatsOut.model_validate(backup_stats(ctx, days=days))


@router.get("/{backup_id}", summary="One backup in detail")
def get_backup_details(
    _: ReaderDep,
    backup: BackupDep,
    ctx: ContextDep,
    files_offset: Annotated[int, Query(ge=0)] = 0,
    files_limit: Annotated[int, Query(ge=0, le=5000)] = 1000,
) -> BackupDetailOut:
    """The record, its metadata, the bundle's objects, one page of its file index and the
    signatures applied to it (deletion approvals, restore approvals)."""
    data = backup_details(ctx, backup, files_offset=files_offset, files_limit=files_limit)
    return BackupDetailOut.model_validate(data)


@router.get(
    "/{backup_id}/download",
    summary="Download a backup as one tar",
    response_class=StreamingResponse,
    responses={
        200: {"content": {"application/x-tar": {}}, "description": "The whole tar."},
        206: {"content": {"application/x-tar": {}}, "description": "The requested range."},
        409: {"description": "The backup is not completed"},
        416: {"description": "The range lies outside the tar (see `Content-Range`)"},
    },
)
def download(
    principal: AdminDep,
    backup: BackupDep,
    ctx: ContextDep,
    request: Request,
    range_: Annotated[
        str | None, Header(alias="Range", description="One byte range: `bytes=N-`, `bytes=N-M`.")
    ] = None,
    if_range: Annotated[
        str | None, Header(description="Send the range only if the ETag still matches.")
    ] = None,
) -> Response:
    """``<name>/manifest.json`` then every part, uncompressed tar, streamed from storage.
    Check each part's SHA-256 against the manifest after unpacking. Audited."""
    try:
        tar, wanted = start_download(
            ctx,
            backup,
            principal.actor(),
            range_header=range_,
            if_range=if_range,
            request_id=request_id(request),
            client_address=client_address(request),
        )
    except RangeNotSatisfiableError as exc:
        answer = problem(416, exc.title, exc.message, request)
        answer.headers["Content-Range"] = f"bytes */{exc.size}"
        return answer
    headers = {
        "ETag": tar.etag,
        "Last-Modified": format_datetime(tar.last_modified, usegmt=True),
        "Accept-Ranges": "bytes",
        "Content-Disposition": f'attachment; filename="{tar.filename}"',
        "Cache-Control": "private, no-transform",
    }
    if wanted is None:
        headers["Content-Length"] = str(tar.size)
        return StreamingResponse(tar.stream(), media_type="application/x-tar", headers=headers)
    headers["Content-Length"] = str(wanted.length)
    headers["Content-Range"] = f"bytes {wanted.start}-{wanted.end}/{tar.size}"
    return StreamingResponse(
        tar.stream(wanted), status_code=206, media_type="application/x-tar", headers=headers
    )


@router.post(
    "/{backup_id}/verify",
    status_code=status.HTTP_202_ACCEPTED,
    summary="Verify a backup (as a job)",
    responses=_JOB_RESPONSES,
)
def verify(
    principal: AdminDep, backup: BackupDep, ctx: ContextDep, request: Request, response: Response
) -> JobAccepted:
    """Re-read every part of the bundle against its manifest; the report is the job's result
    and the backup's ``verify_status``."""
    job = JobService(ctx).submit(
        BACKUP_VERIFY,
        {"backup_id": str(backup.id)},
        principal.actor(),
        "backup",
        str(backup.id),
        request_id=request_id(request),
        client_address=client_address(request),
    )
    return accepted(request, response, job)


@router.delete(
    "/{backup_id}",
    summary="Delete a backup (signed)",
    responses={
        403: {"description": "No signature, or the signature was refused"},
        409: {"description": "On legal hold, still running, being restored, already deleted"},
    },
)
def delete(
    principal: AdminDep,
    backup: BackupDep,
    ctx: ContextDep,
    request: Request,
    given: Annotated[BackupDeleteIn | None, Body()] = None,
) -> BackupOut:
    """Soft delete (hidden, bundle kept) or, with ``purge``, remove the objects too. Needs
    an electronic signature with the meaning ``Approved deletion``; audited with the old and
    new values."""
    body = given or BackupDeleteIn()
    operation = {
        "action": "backup.delete",
        "target_type": "backup",
        "target_id": str(backup.id),
        "purge": body.purge,
    }
    deletion = BackupDeletion(ctx)
    wanted = DeleteRequest(
        backup.id,
        principal.actor(),
        purge=body.purge,
        request_id=request_id(request),
        client_address=client_address(request),
    )
    deletion.check(wanted)  # refused before anyone signs
    signature = require_signature(
        ctx,
        principal,
        request,
        signature=body.signature,
        signature_id=body.signature_id,
        operation=operation,
        meaning=DELETE_MEANING,
    )
    signed = replace(wanted, reason=signature.reason, signature_id=str(signature.id))
    row = deletion.delete(signed)
    return BackupOut.of(row)
