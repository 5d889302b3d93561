"""Verifying a backup: the manifest against the catalog, then every part re-read."""

from __future__ import annotations

import threading
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from clinvault.catalog.models import AuditOutcome, Backup
from clinvault.engine.checks import (
    BundleChecker,
    PartCheck,
    check_manifest_checksum,
    read_manifest,
)
from clinvault.engine.progress import ProgressCallback, ProgressTracker
from clinvault.errors import ClinVaultError
from clinvault.services.actor import Actor
from clinvault.services.audit import check_exported_chain
from clinvault.services.context import ServiceContext
from clinvault.services.queries import get_backup


@dataclass
class VerifyReport:
    backup_id: str
    name: str
    ok: bool
    checksum: str | None
    problems: list[str] = field(default_factory=list)
    parts: list[PartCheck] = field(default_factory=list)
    verified_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.backup_id,
            "name": self.name,
            "ok": self.ok,
            "status": "passed" if self.ok else "failed",
            "checksum": self.checksum,
            "problems": self.problems,
            "parts": [p.to_json() for p in self.parts],
            "verified_at": self.verified_at.isoformat(),
        }


class VerifyService:
    def __init__(self, ctx: ServiceContext) -> None:
        self.ctx = ctx

    def verify(
        self,
        backup_id: uuid.UUID | str,
        actor: Actor,
        *,
        on_progress: ProgressCallback | None = None,
        cancel: threading.Event | None = None,
    ) -> VerifyReport:
        """Re-read the whole bundle; record and audit the outcome; never raise on bad data."""
        row = get_backup(self.ctx, backup_id)
        report = self._check(row, on_progress, cancel)
        with self.ctx.catalog.session(write_lock=True) as session:
            stored = session.get_one(Backup, row.id)
            stored.verified_at = report.verified_at
            stored.verify_status = "passed" if report.ok else "failed"
        self.ctx.audit.record(
            "backup.verify",
            actor_id=actor.id,
            actor_name=actor.name,
            outcome=AuditOutcome.SUCCESS if report.ok else AuditOutcome.FAILURE,
            target_type="backup",
            target_id=str(row.id),
            details={"ok": report.ok, "problems": report.problems[:20]},
        )
        return report

    def _check(
        self, row: Backup, on_progress: ProgressCallback | None, cancel: threading.Event | None
    ) -> VerifyReport:
        report = VerifyReport(str(row.id), row.name, ok=False, checksum=row.checksum)
        try:
            manifest, data = read_manifest(self.ctx.storage, str(row.id))
        except ClinVaultError as exc:
            report.problems.append(exc.message)
            return report
        mismatch = check_manifest_checksum(data, row.checksum)
        if mismatch:
            report.problems.append(mismatch)
        tracker = ProgressTracker(on_progress)
        tracker.plan("verify", manifest.compressed_size)
        tracker.start("verify", "re-reading every part")
        checker = BundleChecker(
            self.ctx.storage,
            str(row.id),
            manifest,
            toolkit=self.ctx.toolkit,
            audit_checker=check_exported_chain,
            on_bytes=lambda n: tracker.advance("verify", n),
            cancel=cancel,
        )
        report.parts = checker.check_all()
        tracker.finish("verify")
        for part in report.parts:
            report.problems.extend(part.problems)
        report.ok = not report.problems
        return report
