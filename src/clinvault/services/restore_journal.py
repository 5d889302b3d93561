"""The journal of a restore: what it changed, how to undo it, what to clean up.

A restore writes each change to its operation's metadata (the *journal*) before making it.
From the journal alone, in the same process after a failure or in the next one after a
crash, :func:`rollback_journal` puts the live platform back and :func:`cleanup_journal`
removes what staging left. Undoing reads the current state (which databases and
directories exist), so it is safe after a partial change and when repeated.
"""

from __future__ import annotations

import contextlib
import uuid
from pathlib import Path
from typing import Any, Literal

import sqlalchemy as sa

from clinvault.catalog.models import AuditOutcome, RestoreOperation, RestoreStatus
from clinvault.engine.checks import read_manifest
from clinvault.engine.dbrestore import (
    CutOver,
    drop_database,
    maintenance,
    restore_dump,
    server_major,
    terminate_sessions,
    undo_cut_over,
)
from clinvault.engine.filerestore import SwapRecord, remove_tree, undo_swap
from clinvault.engine.staging import stage_part
from clinvault.errors import ClinVaultError
from clinvault.services.actor import Actor
from clinvault.services.context import ServiceContext
from clinvault.services.processes import worker_is_dead
from clinvault.services.restore_ops import finish_operation

RUNNER = "clinvault.restore"  # marks the operations of this runner (granular has its own)


def audit_restore(
    ctx: ServiceContext,
    action: str,
    actor: Actor,
    op_id: uuid.UUID | None,
    details: dict[str, Any],
    outcome: AuditOutcome = AuditOutcome.SUCCESS,
) -> None:
    """One audit event about a restore operation."""
    ctx.audit.record(
        action,
        actor_id=actor.id,
        actor_name=actor.name,
        outcome=outcome,
        target_type="restore",
        target_id=str(op_id) if op_id is not None else None,
        details=details,
    )


def journal_changed(journal: dict[str, Any]) -> bool:
    """True when the journal records a change to the live platform."""
    return any(journal.get(k) for k in ("swap", "cutover", "in_place"))


def rollback_journal(ctx: ServiceContext, journal: dict[str, Any]) -> list[str]:
    """Undo every change the journal records, files first; returns what was done. Raises
    ``ClinVaultError`` listing what could not be undone (the rest is still attempted)."""
    done: list[str] = []
    failures: list[str] = []
    steps = [
        ("swap", "the files are back as they were", _undo_files),
        ("cutover", "the database is back as it was", _undo_database),
        ("in_place", "the database was restored from the safety backup", _undo_in_place),
    ]
    for key, note, undo in steps:
        if not journal.get(key):
            continue
        try:
            undo(ctx, journal)
            done.append(note)
        except (ClinVaultError, OSError) as exc:
            message = exc.message if isinstance(exc, ClinVaultError) else str(exc)
            failures.append(f"{key}: {message}")
    created = journal.get("created_files_root")
    if created:
        with contextlib.suppress(OSError):
            Path(created).rmdir()
    if failures:
        raise ClinVaultError("rollback incomplete: " + "; ".join(failures))
    return done


def _undo_files(ctx: ServiceContext, journal: dict[str, Any]) -> None:
    undo_swap(SwapRecord.from_json(journal["swap"]))


def _undo_database(ctx: ServiceContext, journal: dict[str, Any]) -> None:
    undo_cut_over(ctx.platform, CutOver.from_json(journal["cutover"]))


def _undo_in_place(ctx: ServiceContext, journal: dict[str, Any]) -> None:
    """The in-place method has no renamed copy: the safety backup is the checkpoint."""
    safety = journal.get("safety_backup_id")
    if not safety:
        raise ClinVaultError("no safety backup to restore the database from")
    manifest, _ = read_manifest(ctx.storage, safety)
    part = manifest.part("database")
    if part is None:
        raise ClinVaultError(f"safety backup {safety} has no database part")
    database = str(journal["in_place"]["database"])
    server = ctx.platform
    source_major = (manifest.source.server_version_num or 0) // 10000
    tool = ctx.toolkit.find("pg_restore", max(source_major, server_major(server)))
    staged = ctx.settings.resolved_staging_dir / f"rollback-{uuid.uuid4().hex[:8]}"
    try:
        staged.mkdir(parents=True, mode=0o700)
        dump = stage_part(ctx.storage, safety, part, staged / "database.dump")
        with maintenance(server) as db:
            terminate_sessions(db, database)
        restore_dump(
            tool,
            server.with_database(database),
            dump,
            jobs=1,
            in_place=True,
            timeout=ctx.settings.tool_timeout_seconds,
        )
    finally:
        remove_tree(staged)


Cleanup = Literal["completed", "discard", "keep"]


def cleanup_journal(ctx: ServiceContext, journal: dict[str, Any], mode: Cleanup) -> None:
    """Remove what a restore left behind, by how it ended.

    ``completed``: the staged dump and tree go, the checkpoint stays (when it holds anything).
    ``discard`` (failed, nothing changed or all undone): everything goes, the unused restored
    database too. ``keep`` (a rollback that did not finish): only the staged dump goes;
    the checkpoint and the restored copy stay for the operator.
    """
    if journal.get("dump_dir"):
        remove_tree(Path(journal["dump_dir"]))
    if mode == "keep":
        return
    staged_db = journal.get("staged_database")
    if staged_db and mode == "discard":
        drop_database(ctx.platform, staged_db)
    work = journal.get("work_dir")
    if work:
        work_dir = Path(work)
        remove_tree(work_dir / "staging")
        if mode == "discard" or not _has_content(work_dir / "checkpoint"):
            remove_tree(work_dir)
            with contextlib.suppress(OSError):
                work_dir.parent.rmdir()


def _has_content(path: Path) -> bool:
    return path.is_dir() and any(path.iterdir())


def checkpoint_of(journal: dict[str, Any]) -> dict[str, Any] | None:
    """The checkpoint a successful restore leaves: the renamed database and the old tree."""
    found: dict[str, Any] = {}
    if journal.get("cutover"):
        found["database"] = journal["cutover"]["checkpoint"]
    work = journal.get("work_dir")
    if work and _has_content(Path(work) / "checkpoint"):
        found["directory"] = str(Path(work) / "checkpoint")
    return found or None


def recover_interrupted(ctx: ServiceContext) -> list[str]:
    """Roll back and close the restores whose process died (SIGKILL, power loss).

    Their journal says what had changed; that is undone, staging is removed, the record
    becomes ``rolled_back`` (or ``failed`` when nothing had changed yet), and it is audited.
    Restores of live processes, of other hosts and of other runners are left alone.
    """
    with ctx.catalog.session() as session:
        rows = list(
            session.scalars(
                sa.select(RestoreOperation).where(
                    RestoreOperation.status != RestoreStatus.COMPLETED
                )
            )
        )
    recovered = []
    for op in rows:
        meta = op.metadata_ or {}
        if meta.get("runner") != RUNNER or meta.get("settled"):
            continue
        if not meta.get("worker") or not worker_is_dead(meta["worker"]):
            continue
        _recover(ctx, op.id, dict(meta.get("journal") or {}))
        recovered.append(str(op.id))
    return recovered


def _recover(ctx: ServiceContext, op_id: uuid.UUID, journal: dict[str, Any]) -> None:
    system = Actor.system()
    changed = journal_changed(journal)
    problem = None
    try:
        undone = rollback_journal(ctx, journal) if changed else []
    except ClinVaultError as exc:
        problem, undone = exc.message, []
    with contextlib.suppress(ClinVaultError, OSError):
        cleanup_journal(ctx, journal, "keep" if problem else "discard")
    error = "interrupted: the process running this restore stopped"
    if changed:
        error += f"; {problem}" if problem else "; its changes were rolled back"
    status = RestoreStatus.ROLLED_BACK if changed and not problem else RestoreStatus.FAILED
    finish_operation(
        ctx, op_id, status, error=error, metadata={"settled": True, "rollback": undone}
    )
    audit_restore(
        ctx,
        "restore.recover",
        system,
        op_id,
        {"status": status.value, "rolled_back": undone, "error": problem},
        AuditOutcome.FAILURE,
    )
