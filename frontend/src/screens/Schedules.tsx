import { useEffect, useState } from "react";
import { useForm } from "react-hook-form";
import { ApiError } from "../api/client";
import { deleteSchedule, previewCron, previewRetention, saveSchedule, toggleSchedule, useScheduleMutation, useSchedules } from "../api/queries";
import type { CronPreview, RetentionReport, Schedule, ScheduleIn } from "../api/types";
import { ConfirmDialog } from "../components/ConfirmDialog";
import { Dialog } from "../components/Dialog";
import { EmptyState, ErrorBox, Loading, PageHeader, StatusBadge, Time } from "../components/ui";
import { CRON_PRESETS, describeCron, timeZones } from "../lib/cron";
import { BACKUP_TYPES, formatAge, formatTime } from "../lib/format";
import { browserZone } from "../prefs";

export function Schedules() {
  const schedules = useSchedules();
  const [editing, setEditing] = useState<Schedule | "new" | null>(null);
  const [removing, setRemoving] = useState<Schedule | null>(null);
  const toggle = useScheduleMutation((id: string) => toggleSchedule(id));
  const remove = useScheduleMutation((id: string) => deleteSchedule(id));
  const notThere = schedules.error instanceof ApiError && schedules.error.status === 404;

  return (
    <div className="page">
      <PageHeader title="Schedules" subtitle="Recurring backups, with their retention. Times are computed in each schedule's time zone.">
        <button type="button" className="primary" onClick={() => setEditing("new")}>
          New schedule
        </button>
      </PageHeader>
      {notThere ? (
        <EmptyState title="Schedules are not available on this server yet" />
      ) : (
        <ErrorBox error={schedules.error} title="Schedules unavailable" onRetry={() => schedules.refetch()} />
      )}
      <ErrorBox error={toggle.error} title="Could not change the schedule" />
      {schedules.isLoading ? (
        <Loading />
      ) : schedules.data && schedules.data.length ? (
        <table className="table">
          <thead>
            <tr>
              <th scope="col">Active</th>
              <th scope="col">Name</th>
              <th scope="col">Type</th>
              <th scope="col">When</th>
              <th scope="col">Next run</th>
              <th scope="col">Last run</th>
              <th scope="col">Retention</th>
              <th scope="col"><span className="sr-only">Actions</span></th>
            </tr>
          </thead>
          <tbody>
            {schedules.data.map((s) => (
              <tr key={s.id}>
                <td>
                  <label className="switch">
                    <input type="checkbox" role="switch" checked={s.is_active} disabled={toggle.isPending} onChange={() => toggle.mutate(s.id)} aria-label={`${s.name} active`} />
                    <span>{s.is_active ? "On" : "Paused"}</span>
                  </label>
                </td>
                <td>{s.name}</td>
                <td>{BACKUP_TYPES[s.backup_type] ?? s.backup_type}</td>
                <td>
                  {describeCron(s.cron_expression) ?? s.cron_expression} <span className="muted">({s.timezone})</span>
                  <div className="muted small"><code>{s.cron_expression}</code></div>
                </td>
                <td>{s.is_active && s.next_run_at ? <><Time value={s.next_run_at} /> <span className="muted small">{formatAge(s.next_run_at)}</span></> : <span className="muted">paused</span>}</td>
                <td>{s.last_run_at ? <><StatusBadge status={s.last_status ?? "pending"} /> <Time value={s.last_run_at} /></> : <span className="muted">never</span>}</td>
                <td>{retentionText(s)}</td>
                <td className="row-actions">
                  <button type="button" onClick={() => setEditing(s)} aria-label={`Edit ${s.name}`}>Edit</button>
                  <button type="button" className="danger-outline" onClick={() => setRemoving(s)} aria-label={`Delete ${s.name}`}>Delete</button>
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      ) : (
        !schedules.error && (
          <EmptyState title="No schedules yet">
            <button type="button" className="button-link" onClick={() => setEditing("new")}>Create a schedule</button> so backups happen without anyone remembering to.
          </EmptyState>
        )
      )}
      {editing && <ScheduleDialog schedule={editing === "new" ? null : editing} onClose={() => setEditing(null)} />}
      {removing && (
        <ConfirmDialog title="Delete schedule?" confirmLabel="Delete schedule" danger onClose={() => setRemoving(null)} onConfirm={() => remove.mutateAsync(removing.id)}>
          <p>
            The schedule <strong>{removing.name}</strong> stops. Backups it already made are kept and follow the retention rules of manual backups.
          </p>
        </ConfirmDialog>
      )}
    </div>
  );
}

function retentionText(s: Schedule): string {
  const parts: string[] = [];
  if (s.retention_days) parts.push(`${s.retention_days} days`);
  for (const [k, v] of Object.entries(s.keep_rules ?? {})) if (v) parts.push(`keep ${v} ${k}`);
  return parts.join(", ") || "kept for ever";
}

interface Fields {
  name: string;
  backup_type: "full" | "database" | "files";
  preset: string;
  cron_expression: string;
  timezone: string;
  retention_days: string;
  keep_last: string;
  keep_daily: string;
  keep_weekly: string;
  keep_monthly: string;
  compression: "zstd" | "gzip";
  is_active: boolean;
}

const num = (v: string): number | null => (v.trim() === "" ? null : Number(v));

export function toScheduleIn(f: Fields): ScheduleIn {
  const keep = { last: num(f.keep_last), daily: num(f.keep_daily), weekly: num(f.keep_weekly), monthly: num(f.keep_monthly) };
  const anyKeep = Object.values(keep).some((v) => v !== null);
  return {
    name: f.name.trim(),
    backup_type: f.backup_type,
    scope: "all",
    scope_ids: [],
    cron_expression: f.cron_expression.trim(),
    timezone: f.timezone,
    retention_days: num(f.retention_days),
    keep_rules: anyKeep ? keep : null,
    compression: f.compression,
    is_active: f.is_active,
  };
}

function ScheduleDialog({ schedule, onClose }: { schedule: Schedule | null; onClose(): void }) {
  const save = useScheduleMutation((body: ScheduleIn) => saveSchedule(body, schedule?.id));
  const preset = CRON_PRESETS.find((p) => p.expression === (schedule?.cron_expression ?? "0 2 * * *"));
  const { register, handleSubmit, watch, setValue, formState } = useForm<Fields>({
    defaultValues: {
      name: schedule?.name ?? "",
      backup_type: schedule?.backup_type ?? "full",
      preset: preset?.expression ?? "custom",
      cron_expression: schedule?.cron_expression ?? "0 2 * * *",
      timezone: schedule?.timezone ?? browserZone(),
      retention_days: schedule?.retention_days?.toString() ?? "30",
      keep_last: schedule?.keep_rules?.last?.toString() ?? "",
      keep_daily: schedule?.keep_rules?.daily?.toString() ?? "7",
      keep_weekly: schedule?.keep_rules?.weekly?.toString() ?? "4",
      keep_monthly: schedule?.keep_rules?.monthly?.toString() ?? "",
      compression: (schedule?.compression as "zstd" | "gzip") ?? "zstd",
      is_active: schedule?.is_active ?? true,
    },
  });
  const expression = watch("cron_expression");
  const timezone = watch("timezone");
  const [preview, setPreview] = useState<CronPreview | null>(null);
  const [previewError, setPreviewError] = useState<string | null>(null);
  const description = describeCron(expression);

  // The server's own calculation (croniter, in the zone) is the one that counts.
  useEffect(() => {
    setPreview(null);
    setPreviewError(null);
    if (!expression.trim()) return;
    const timer = setTimeout(() => {
      previewCron(expression.trim(), timezone, 5)
        .then(setPreview)
        .catch((e: unknown) => setPreviewError(e instanceof ApiError ? e.detail : "Could not compute the next runs."));
    }, 350);
    return () => clearTimeout(timer);
  }, [expression, timezone]);

  const submit = handleSubmit(async (fields) => {
    await save.mutateAsync(toScheduleIn(fields));
    onClose();
  });

  return (
    <Dialog
      title={schedule ? `Edit schedule ${schedule.name}` : "New schedule"}
      onClose={onClose}
      busy={formState.isSubmitting}
      wide
      footer={
        <>
          <button type="button" onClick={onClose} disabled={formState.isSubmitting}>
            Cancel
          </button>
          <button type="submit" form="schedule-form" className="primary" disabled={formState.isSubmitting}>
            {formState.isSubmitting ? "Saving…" : "Save schedule"}
          </button>
        </>
      }
    >
      <form id="schedule-form" className="form" onSubmit={submit} noValidate>
        <div className="row">
          <div className="field">
            <label htmlFor="schedule-name">Name</label>
            <input id="schedule-name" data-autofocus aria-invalid={!!formState.errors.name} {...register("name", { required: "Give the schedule a name.", maxLength: 255 })} />
            {formState.errors.name && <p className="field-error">{formState.errors.name.message}</p>}
          </div>
          <div className="field">
            <label htmlFor="schedule-type">Backup type</label>
            <select id="schedule-type" {...register("backup_type")}>
              <option value="full">Full (database + files)</option>
              <option value="database">Database only</option>
              <option value="files">Files only</option>
            </select>
          </div>
        </div>
        <fieldset className="cron-builder">
          <legend>When</legend>
          <div className="row">
            <div className="field">
              <label htmlFor="schedule-preset">Preset</label>
              <select
                id="schedule-preset"
                {...register("preset", {
                  onChange: (e) => e.target.value !== "custom" && setValue("cron_expression", e.target.value, { shouldValidate: true }),
                })}
              >
                {CRON_PRESETS.map((p) => (
                  <option key={p.expression} value={p.expression}>
                    {p.label}
                  </option>
                ))}
                <option value="custom">Custom expression…</option>
              </select>
            </div>
            <div className="field">
              <label htmlFor="schedule-cron">Cron expression</label>
              <input
                id="schedule-cron"
                className="mono"
                aria-describedby="schedule-cron-help"
                aria-invalid={!!formState.errors.cron_expression || !!previewError}
                {...register("cron_expression", {
                  required: "Give a cron expression.",
                  validate: (v) => describeCron(v) !== null || "Five fields: minute hour day-of-month month day-of-week.",
                  onChange: (e) => setValue("preset", CRON_PRESETS.find((p) => p.expression === e.target.value.trim())?.expression ?? "custom"),
                })}
              />
            </div>
            <div className="field">
              <label htmlFor="schedule-tz">Time zone</label>
              <select id="schedule-tz" {...register("timezone")}>
                {timeZones().map((z) => (
                  <option key={z} value={z}>
                    {z}
                  </option>
                ))}
              </select>
            </div>
          </div>
          <div id="schedule-cron-help" className="cron-preview" aria-live="polite">
            {formState.errors.cron_expression && <p className="field-error">{formState.errors.cron_expression.message}</p>}
            <p>
              <strong>{description ?? "Not a valid expression yet."}</strong> {description && <span className="muted">({timezone})</span>}
            </p>
            {previewError && <p className="field-error">{previewError}</p>}
            {preview && (
              <>
                <p className="muted">Next runs:</p>
                <ol className="next-runs">
                  {preview.runs.map((r, i) => (
                    <li key={r}>
                      {formatTime(preview.runs_local[i] ?? r, timezone)} <span className="muted">= {formatTime(r, "UTC")}</span>
                    </li>
                  ))}
                </ol>
              </>
            )}
          </div>
        </fieldset>
        <fieldset>
          <legend>Retention</legend>
          <p className="hint">A backup is kept while any rule keeps it. Leave a field empty to not use that rule.</p>
          <div className="row">
            {(
              [
                ["retention_days", "Keep for (days)"],
                ["keep_last", "Keep last"],
                ["keep_daily", "Daily"],
                ["keep_weekly", "Weekly"],
                ["keep_monthly", "Monthly"],
              ] as const
            ).map(([name, label]) => (
              <div className="field" key={name}>
                <label htmlFor={`schedule-${name}`}>{label}</label>
                <input id={`schedule-${name}`} type="number" min={0} inputMode="numeric" {...register(name, { validate: (v) => v === "" || Number(v) >= 0 || "Zero or more." })} />
              </div>
            ))}
          </div>
          {schedule && <RetentionDryRun scheduleId={schedule.id} />}
        </fieldset>
        <div className="row">
          <div className="field">
            <label htmlFor="schedule-compression">Compression</label>
            <select id="schedule-compression" {...register("compression")}>
              <option value="zstd">zstd</option>
              <option value="gzip">gzip</option>
            </select>
          </div>
          <label className="checkbox">
            <input type="checkbox" {...register("is_active")} /> Active
          </label>
        </div>
        <ErrorBox error={save.error} title="Not saved" />
      </form>
    </Dialog>
  );
}

/** A dry run of the saved rules: which backups would go now, and why each one stays. */
function RetentionDryRun({ scheduleId }: { scheduleId: string }) {
  const [report, setReport] = useState<RetentionReport | null>(null);
  const [error, setError] = useState<unknown>(null);
  const [busy, setBusy] = useState(false);
  async function run() {
    setBusy(true);
    setError(null);
    try {
      setReport(await previewRetention(scheduleId));
    } catch (caught) {
      setError(caught);
    } finally {
      setBusy(false);
    }
  }
  return (
    <div className="retention-dry-run">
      <button type="button" className="secondary" onClick={run} disabled={busy}>
        {busy ? "Checking…" : "Dry run: what would the saved rules delete now?"}
      </button>
      <ErrorBox error={error} title="Dry run failed" />
      {report && (
        <div aria-live="polite">
          <p className="hint">
            {report.deleted.length === 0
              ? `Nothing would be deleted; ${report.kept} backup(s) kept.`
              : `${report.deleted.length} backup(s) would be deleted, ${report.kept} kept.`}{" "}
            Saved rules only: save the dialog first to try new values.
          </p>
          {report.decisions.length > 0 && (
            <ul className="retention-decisions">
              {report.decisions.map((d) => (
                <li key={d.backup_id}>
                  <strong>{d.action === "delete" ? "Delete" : "Keep"}</strong> {d.name} ({formatTime(d.created_at)}): {d.reasons.join("; ")}
                </li>
              ))}
            </ul>
          )}
        </div>
      )}
    </div>
  );
}
