"""Restores: preview and validate (read-only), execute (a signed job), and the history.

All SYSTEM_ADMIN. ``execute`` needs ``confirm: true`` and an electronic signature with the
meaning ``Approved restore`` over the exact request; without either it is refused, and the
refusal is audited. The signature's id is kept with the job, the restore record and the
audit trail, and the history shows it.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response, status

from clinvault.api.deps import ContextDep, client_address, request_id
from clinvault.api.routes.backups import accepted, require_signature
from clinvault.api.schemas.jobs import JobAccepted
from clinvault.api.schemas.restore import (
    RestoreExecuteIn,
    RestoreHistoryPage,
    RestoreOperationOut,
    RestorePreviewIn,
    RestoreValidateIn,
    ValidationOut,
)
from clinvault.api.security import AdminDep
from clinvault.catalog.models import AuditOutcome, RestoreStatus
from clinvault.errors import InvalidInputError
from clinvault.services.granular import GranularRestoreService
from clinvault.services.job_handlers import RESTORE_EXECUTE
from clinvault.services.jobs import JobService
from clinvault.services.restore import RestoreService
from clinvault.services.restore_ops import RestoreTarget
from clinvault.services.scoping import KINDS as GRANULAR_KINDS
from clinvault.services.stats import printable, restore_history

router = APIRouter(prefix="/restore", tags=["restores"])

RESTORE_MEANING = "Approved restore"


@router.post("/preview", summary="Preview a restore")
def preview(principal: AdminDep, body: RestorePreviewIn, ctx: ContextDep) -> dict[str, Any]:
    """What a restore would change on the live platform, without changing anything: rows and
    files to add, replace or remove, rows modified since the backup (they would be lost),
    broken references, and an estimated duration."""
    backup_id = str(body.backup_id)
    if body.scope in GRANULAR_KINDS:
        found = GranularRestoreService(ctx).preview(backup_id, body.scope, list(body.ids))
    elif body.ids:
        raise InvalidInputError("ids: only allowed with a study or organization scope")
    else:
        found = RestoreService(ctx).preview(backup_id, body.scope)
    return printable(found)  # type: ignore[no-any-return]


@router.post("/validate", summary="Validate a backup for restore")
def validate(principal: AdminDep, body: RestoreValidateIn, ctx: ContextDep) -> ValidationOut:
    """Every check a restore makes before it changes anything: bundle complete, checksums,
    format version, server compatibility, room on disk, target. Changes nothing."""
    target = RestoreTarget(body.target.database, body.target.directory)
    report = RestoreService(ctx).validate_backup(
        body.backup_id, body.scope, target, check_hashes=body.check_hashes
    )
    return ValidationOut.model_validate({"backup_id": body.backup_id, **report.to_json()})


@router.post(
    "/execute",
    status_code=status.HTTP_202_ACCEPTED,
    summary="Run a restore (signed, as a job)",
    responses={
        202: {"description": "Accepted: the restore job is queued."},
        403: {"description": "No signature, or the signature was refused"},
        422: {"description": "Not confirmed, or an invalid request"},
    },
)
def execute(
    principal: AdminDep,
    body: RestoreExecuteIn,
    ctx: ContextDep,
    request: Request,
    response: Response,
) -> JobAccepted:
    """Check the request, take the signature, and queue the restore. Follow the job for
    progress; the restore record (``GET /restore/history``) keeps the validation results and
    the signature."""
    operation = body.operation()
    jobs = JobService(ctx)
    origin = {"request_id": request_id(request), "client_address": client_address(request)}
    if not body.confirm:
        actor = principal.actor()
        ctx.audit.record(
            RESTORE_EXECUTE,
            actor_id=actor.id,
            actor_name=actor.name,
            outcome=AuditOutcome.DENIED,
            target_type="backup",
            target_id=str(body.backup_id),
            details={"operation": operation, "problem": "not confirmed"},
            **origin,
        )
        raise InvalidInputError("confirm: must be true; a restore replaces live data")
    params = jobs.check(
        RESTORE_EXECUTE,
        {
            "backup_id": str(body.backup_id),
            "scope": body.scope,
            "ids": list(body.ids),
            "target": body.target.to_json(),
            "safety_backup": body.safety_backup,
        },
    )
    signature = require_signature(
        ctx,
        principal,
        request,
        signature=body.signature,
        signature_id=body.signature_id,
        operation=operation,
        meaning=RESTORE_MEANING,
    )
    job = jobs.submit(
        RESTORE_EXECUTE,
        {**params, "signature_id": str(signature.id)},
        principal.actor(),
        "backup",
        str(body.backup_id),
        **origin,
    )
    return accepted(request, response, job, signature_id=signature.id)


@router.get("/history", summary="Restore history")
def history(
    principal: AdminDep,
    ctx: ContextDep,
    status: Annotated[RestoreStatus | None, Query(description="Only this status.")] = None,
    offset: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> RestoreHistoryPage:
    """Every restore, newest first: status, validation results, error, and the signature
    that approved it."""
    items, total = restore_history(ctx, status=status, offset=offset, limit=limit)
    return RestoreHistoryPage(
        items=[RestoreOperationOut.model_validate(i) for i in items],
        total=total,
        offset=offset,
        limit=limit,
    )
