"""The steps of one restore.

Everything slow happens beside the live platform first: the dump is staged and restored
into a new database, the files are extracted into a staging directory, each verified. Only
then do things change, in a short cut-over: safety backup, pre hook, database swap, files
swap, validation of what is now live, post hook. Each change is written to the operation's
*journal* (its catalog metadata) before it is made, so that
:mod:`clinvault.services.restore_journal` can undo it in this process after a failure, or
in the next one after a crash.
"""

from __future__ import annotations

import threading
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from clinvault.catalog.models import Backup, BackupType
from clinvault.engine.archive import FileEntry
from clinvault.engine.dbrestore import (
    CutOver,
    compare_counts,
    count_rows_and_analyze,
    create_database,
    cut_over,
    database_settings,
    derived_name,
    maintenance,
    restore_dump,
    restore_dump_parallel,
    terminate_sessions,
)
from clinvault.engine.filerestore import (
    extract_part,
    plan_swap,
    swap_directories,
)
from clinvault.engine.hooks import run_hook
from clinvault.engine.manifest import Manifest
from clinvault.engine.pgtools import PgTool
from clinvault.engine.progress import ProgressTracker
from clinvault.engine.staging import stage_part
from clinvault.errors import CancelledError, ClinVaultError, IntegrityError
from clinvault.services.actor import Actor
from clinvault.services.backup import BackupRequest, BackupService
from clinvault.services.context import ServiceContext
from clinvault.services.restore_ops import update_operation
from clinvault.services.restore_validation import (
    RestoreScope,
    RestoreSite,
    validate_restored_data,
)

Method = Literal["swap", "in_place", "new_database"]
SAFETY_TYPES = {
    RestoreScope.FULL: BackupType.FULL,
    RestoreScope.DATABASE: BackupType.DATABASE,
    RestoreScope.FILES: BackupType.FILES,
}


def create_safety_backup(
    ctx: ServiceContext,
    scope: RestoreScope,
    actor: Actor,
    *,
    name: str | None = None,
    description: str | None = None,
    cancel: threading.Event | None = None,
) -> Backup:
    """A regular bundle of the current state, flagged as a safety backup in the catalog, so
    the pre-restore state stays restorable after the checkpoint is dropped."""
    request = BackupRequest(SAFETY_TYPES[scope], name=name, description=description, safety=True)
    return BackupService(ctx).create(request, actor, cancel=cancel)


@dataclass(frozen=True, slots=True)
class RestoreJob:
    """Everything decided about a restore before it starts."""

    op_id: uuid.UUID
    backup: Backup
    manifest: Manifest
    scope: RestoreScope
    site: RestoreSite
    method: Method
    safety_backup: bool
    tool: PgTool | None

    @property
    def short(self) -> str:
        return self.op_id.hex[:8]

    @property
    def backup_id(self) -> str:
        return str(self.backup.id)

    @property
    def database(self) -> bool:
        return "database" in self.scope.parts

    @property
    def files(self) -> bool:
        return "files" in self.scope.parts

    def dump_dir(self, ctx: ServiceContext) -> Path:
        return ctx.settings.resolved_staging_dir / f"restore-{self.short}"

    def work_dir(self, ctx: ServiceContext) -> Path:
        return ctx.settings.restore_work_root(self.site.files_root) / self.short


class RestoreRunner:
    """Runs the steps of one job; ``journal`` says what has changed so far."""

    def __init__(
        self,
        ctx: ServiceContext,
        job: RestoreJob,
        actor: Actor,
        tracker: ProgressTracker,
        cancel: threading.Event | None,
    ) -> None:
        self.ctx = ctx
        self.job = job
        self.actor = actor
        self.tracker = tracker
        self.cancel = cancel
        self.journal: dict[str, Any] = {}
        self.hooks: list[dict[str, Any]] = []
        self.post_hook_tried = False
        self._dump: Path | None = None
        self._counts: dict[str, int] | None = None  # of the restored copy, before cut-over

    def _save(self, **changes: Any) -> None:
        """Record a step in the catalog *before* it takes effect."""
        self.journal.update(changes)
        update_operation(self.ctx, self.job.op_id, metadata={"journal": dict(self.journal)})

    def _check_cancel(self) -> None:
        if self.cancel is not None and self.cancel.is_set():
            raise CancelledError("restore cancelled")

    def execute(self) -> dict[str, Any]:
        """Stage, switch, validate; returns the validation results. Raises on any failure,
        leaving the journal to undo what changed."""
        results: dict[str, Any] = {}
        if self.job.database:
            results["staged_database"] = self._stage_database()
        if self.job.files:
            results["staged_files"] = self._stage_files()
        self._check_cancel()
        if self.job.safety_backup:
            self._safety_backup()
        self._hook("pre")
        self.tracker.start("cut-over", "switching to the restored data")
        if self.job.database:
            self._switch_database()
        if self.job.files:
            self._switch_files()
        self.tracker.finish("cut-over")
        results["restored"] = self._validate()
        self._hook("post")
        return results

    # --- staging (nothing live changes) ---

    def _stage_database(self) -> dict[str, Any]:
        part = self.job.manifest.part("database")
        assert part is not None and self.job.tool is not None
        dump_dir = self.job.dump_dir(self.ctx)
        self._save(dump_dir=str(dump_dir))
        dump_dir.parent.mkdir(parents=True, exist_ok=True)
        dump_dir.mkdir(mode=0o700)  # the dump is the platform's data: private to ClinVault
        self.tracker.start("database", "staging the dump")
        self._dump = stage_part(
            self.ctx.storage,
            self.job.backup_id,
            part,
            dump_dir / "database.dump",
            on_bytes=lambda n: self.tracker.advance("database", n),
            cancel=self.cancel,
        )
        if self.job.method == "in_place":
            self.tracker.finish("database")
            return {"dump": part.name, "bytes": part.size, "method": "in_place"}
        name = self._staged_database_name()
        site = self.job.site
        with maintenance(site.server) as db:
            like = database_settings(db, site.server.database)
        create_database(site.server, name, like, encoding=self.job.manifest.source.encoding)
        self._save(staged_database=name)  # only once it is ours to drop
        self.tracker.finish("database")
        self.tracker.plan("load", part.size)
        self.tracker.start("load", f"restoring into {name}")
        jobs = self.ctx.settings.restore_jobs
        target = site.server.with_database(name)
        timeout = self.ctx.settings.tool_timeout_seconds
        if jobs > 1:
            restore_dump_parallel(
                self.job.tool,
                target,
                self._dump,
                jobs=jobs,
                timeout=timeout,
                cancel=self.cancel,
                on_bytes=lambda n: self.tracker.advance("load", n),
            )
        else:
            restore_dump(
                self.job.tool, target, self._dump, jobs=1, timeout=timeout, cancel=self.cancel
            )
        self.tracker.finish("load")
        return self._check_counts(name)

    def _staged_database_name(self) -> str:
        if self.job.method == "new_database":
            return self.job.site.database
        return derived_name(self.job.site.database, f"restore_{self.job.short}")

    def _check_counts(self, name: str) -> dict[str, Any]:
        assert self.job.manifest.database is not None
        expected = self.job.manifest.database.tables
        counts = count_rows_and_analyze(self.job.site.server.with_database(name))
        self._counts = counts
        problems = compare_counts(expected, counts)
        if problems:
            raise IntegrityError(
                f"the restored copy does not match the backup: {'; '.join(problems[:10])}"
            )
        return {"database": name, "tables": len(expected), "rows": sum(expected.values())}

    def _stage_files(self) -> dict[str, Any]:
        files = self.job.manifest.files
        part = self.job.manifest.part("files")
        assert files is not None and part is not None
        work = self.job.work_dir(self.ctx)
        self._save(work_dir=str(work))
        work.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.tracker.start("files", "extracting files")
        result = extract_part(
            self.ctx.storage,
            self.job.backup_id,
            part,
            [FileEntry.from_json(e) for e in files.entries],
            work / "staging",
            on_bytes=lambda n: self.tracker.advance("files", n),
            cancel=self.cancel,
        )
        self.tracker.finish("files")
        return {
            "files": result.files,
            "dirs": result.dirs,
            "symlinks": result.symlinks,
            "bytes": result.bytes,
        }

    # --- the cut-over ---

    def _safety_backup(self) -> None:
        self.tracker.start("safety backup", "backing up the current state")
        row = create_safety_backup(
            self.ctx,
            self.job.scope,
            self.actor,
            name=f"safety-before-restore-{self.job.short}",
            description=f"State before restore {self.job.op_id} of backup {self.job.backup.name}",
            cancel=self.cancel,
        )
        update_operation(self.ctx, self.job.op_id, safety_backup_id=row.id)
        self._save(safety_backup_id=str(row.id))  # the checkpoint of an in-place restore
        self.tracker.finish("safety backup")

    def _hook(self, stage: Literal["pre", "post"]) -> None:
        settings = self.ctx.settings
        argv = settings.pre_restore_hook if stage == "pre" else settings.post_restore_hook
        if not argv or not self.job.site.live:
            return
        if stage == "pre":
            self._save(pre_hook_started=True)
        else:
            self.post_hook_tried = True
        result = run_hook(
            f"{stage}-restore",
            argv,
            timeout=settings.hook_timeout_seconds,
            facts={
                "stage": stage,
                "restore_id": str(self.job.op_id),
                "scope": self.job.scope.value,
                "database": self.job.site.database,
                "files_root": str(self.job.site.files_root),
            },
        )
        self.hooks.append({"stage": stage, "command": result.command, "seconds": result.seconds})

    def _switch_database(self) -> None:
        site = self.job.site
        if self.job.method == "new_database":
            return
        if self.job.method == "in_place":
            assert self._dump is not None and self.job.tool is not None
            self._save(in_place={"database": site.database})
            with maintenance(site.server) as db:
                terminate_sessions(db, site.database)
            try:
                restore_dump(
                    self.job.tool,
                    site.server.with_database(site.database),
                    self._dump,
                    jobs=1,
                    in_place=True,
                    timeout=self.ctx.settings.tool_timeout_seconds,
                    cancel=self.cancel,
                )
            except BaseException:
                self._save(in_place=None)  # one transaction: nothing was changed
                raise
            return
        record = CutOver(
            live=site.database,
            restored=self.journal["staged_database"],
            checkpoint=derived_name(site.database, f"pre_restore_{self.job.short}"),
        )
        self._save(cutover=record.to_json())
        cut_over(site.server, record)

    def _switch_files(self) -> None:
        files = self.job.manifest.files
        assert files is not None
        root = self.job.site.files_root
        if not root.exists():
            self._save(created_files_root=str(root))
            root.mkdir(parents=True)
        work = self.job.work_dir(self.ctx)
        planned = plan_swap(root, work / "staging", files.selections, work / "checkpoint")
        self._save(swap=planned.to_json())
        record = swap_directories(root, work / "staging", files.selections, work / "checkpoint")
        self._save(swap=record.to_json())

    def _validate(self) -> dict[str, Any]:
        files = self.job.manifest.files
        total = files.total_bytes if files is not None and self.job.files else 0
        self.tracker.plan("verify", total)
        self.tracker.start("verify", "validating the restored data")
        results = validate_restored_data(
            self.ctx,
            self.job.manifest,
            self.job.scope,
            self.job.site,
            database_counts=self._counts,
            on_bytes=lambda n: self.tracker.advance("verify", n),
            cancel=self.cancel,
        )
        self.tracker.finish("verify")
        if not results["ok"]:
            raise RestoredDataError(results)
        return results

    def restart_services(self) -> str | None:
        """After a rollback: run the post hook if the pre hook ran and the post hook has not
        been tried (it is what restarts the dependent services). Returns a problem, if any."""
        if not self.journal.get("pre_hook_started") or self.post_hook_tried:
            return None
        try:
            self._hook("post")
        except ClinVaultError as exc:
            return exc.message
        return None


class RestoredDataError(IntegrityError):
    """The data now in place does not match the manifest."""

    def __init__(self, results: dict[str, Any]) -> None:
        problems: list[str] = []
        for key in ("database", "files"):
            section = results.get(key) or {}
            problems.extend(f"{key}: {p}" for p in section.get("problems", [])[:5])
        refs = results.get("references") or {}
        if refs.get("binding") and not refs.get("ok", True):
            examples = ", ".join(refs["missing_examples"][:3])
            problems.append(
                f"{refs['missing']} files named in {refs['table']} are missing ({examples})"
            )
        super().__init__(f"the restored data does not match the backup: {'; '.join(problems)}")
        self.results = results
