/** Backup creation in four steps: type and scope, options, review (with an estimate from the
 * last backup of the same kind), and live progress until it succeeds or fails. */
import { useState } from "react";
import { useForm } from "react-hook-form";
import { format } from "date-fns";
import { TZDate } from "@date-fns/tz";
import { createBackup, useBackups } from "../api/queries";
import type { BackupCreate, BackupType, Job } from "../api/types";
import { JobMonitor } from "../components/JobMonitor";
import { Steps } from "../components/Steps";
import { Card, ErrorBox, KeyValues, PageHeader } from "../components/ui";
import { BACKUP_TYPES, formatBytes, formatDuration, formatTime } from "../lib/format";
import { Link } from "../lib/router";
import { expectedStages } from "./stages";

const STEPS = ["Type", "Options", "Review", "Progress"];

export interface WizardFields {
  type: BackupType;
  scope: "all" | "study" | "organization";
  scopeIds: string;
  name: string;
  description: string;
  compression: "zstd" | "gzip";
  level: number;
}

const TYPE_HELP: Record<BackupType, string> = {
  full: "The platform database and the study files (studies/, uploads/), with the audit trail.",
  database: "The PostgreSQL database only: organizations, studies, subjects, visits, lab data.",
  files: "Study files only; optionally one study or one organization.",
};

export function defaultName(type: string, now = new Date()): string {
  return `${type}-${format(new TZDate(now.getTime(), "UTC"), "yyyyMMdd-HHmmss")}`;
}

export function toRequest(f: WizardFields): BackupCreate {
  const ids = f.scopeIds.split(",").map((s) => s.trim()).filter(Boolean);
  const scoped = f.type === "files" && f.scope !== "all";
  return {
    type: f.type,
    scope: scoped ? f.scope : "all",
    scope_ids: scoped ? ids : [],
    name: f.name.trim() || undefined,
    description: f.description.trim() || undefined,
    compression: f.compression,
    level: f.level,
  };
}

export function BackupWizard() {
  const [step, setStep] = useState(0);
  const [jobId, setJobId] = useState<string | null>(null);
  const [submitError, setSubmitError] = useState<unknown>(null);
  const [submitting, setSubmitting] = useState(false);
  const form = useForm<WizardFields>({
    defaultValues: { type: "full", scope: "all", scopeIds: "", name: "", description: "", compression: "zstd", level: 3 },
    mode: "onTouched",
  });
  const { register, watch, trigger, getValues, setValue, formState } = form;
  const values = watch();
  const maxLevel = values.compression === "gzip" ? 9 : 19;

  async function next() {
    const fields: (keyof WizardFields)[][] = [["type", "scope", "scopeIds"], ["name", "description", "compression", "level"]];
    if (step < 2 && !(await trigger(fields[step]))) return;
    if (step === 0 && !getValues("name")) setValue("name", defaultName(getValues("type")));
    setStep(step + 1);
  }

  async function start() {
    setSubmitting(true);
    setSubmitError(null);
    try {
      const accepted = await createBackup(toRequest(getValues()));
      setJobId(accepted.job_id);
      setStep(3);
    } catch (e) {
      setSubmitError(e);
    } finally {
      setSubmitting(false);
    }
  }

  function restart() {
    setJobId(null);
    setStep(0);
    form.reset({ ...getValues(), name: "" });
  }

  return (
    <div className="page">
      <PageHeader title="New backup" subtitle="Back up the clinical platform now. Scheduled backups are set up under Schedules." />
      <Steps steps={STEPS} current={step} />
      <form className="wizard" onSubmit={(e) => e.preventDefault()} noValidate>
        {step === 0 && (
          <Card title="1. What to back up">
            <fieldset className="choices">
              <legend>Backup type</legend>
              {(Object.keys(BACKUP_TYPES) as BackupType[]).map((t) => (
                <label key={t} className={`choice ${values.type === t ? "selected" : ""}`}>
                  <input type="radio" value={t} {...register("type")} />
                  <span>
                    <strong>{BACKUP_TYPES[t]}</strong>
                    <span className="muted">{TYPE_HELP[t]}</span>
                  </span>
                </label>
              ))}
            </fieldset>
            {values.type === "files" && (
              <fieldset className="choices inline-choices">
                <legend>Scope of the files</legend>
                {(["all", "study", "organization"] as const).map((s) => (
                  <label key={s} className="choice-inline">
                    <input type="radio" value={s} {...register("scope")} /> {s === "all" ? "All files" : s === "study" ? "One study" : "One organization"}
                  </label>
                ))}
                {values.scope !== "all" && (
                  <div className="field">
                    <label htmlFor="scope-ids">{values.scope === "study" ? "Study code or id" : "Organization code or id"}</label>
                    <input
                      id="scope-ids"
                      placeholder={values.scope === "study" ? "e.g. STU-0001" : "e.g. ORG-001"}
                      aria-invalid={!!formState.errors.scopeIds}
                      {...register("scopeIds", {
                        validate: (v, all) => all.type !== "files" || all.scope === "all" || v.trim().length > 0 || "Give the code or id to back up.",
                      })}
                    />
                    {formState.errors.scopeIds && <p className="field-error">{formState.errors.scopeIds.message}</p>}
                  </div>
                )}
              </fieldset>
            )}
          </Card>
        )}
        {step === 1 && (
          <Card title="2. Options">
            <div className="field">
              <label htmlFor="backup-name">Name</label>
              <input
                id="backup-name"
                aria-describedby="backup-name-hint"
                aria-invalid={!!formState.errors.name}
                {...register("name", {
                  maxLength: { value: 255, message: "At most 255 characters." },
                  pattern: { value: /^[^\x00-\x1f\x7f]*$/, message: "No control characters." },
                })}
              />
              <p className="hint" id="backup-name-hint">Must be unique. Leave empty for a name made of the type and the UTC time.</p>
              {formState.errors.name && <p className="field-error">{formState.errors.name.message}</p>}
            </div>
            <div className="field">
              <label htmlFor="backup-description">Description (optional)</label>
              <textarea id="backup-description" rows={2} placeholder="e.g. before the 4.2 upgrade" {...register("description", { maxLength: { value: 10000, message: "Too long." } })} />
            </div>
            <div className="row">
              <div className="field">
                <label htmlFor="backup-compression">Compression</label>
                <select
                  id="backup-compression"
                  {...register("compression", {
                    onChange: (e) => setValue("level", e.target.value === "gzip" ? 6 : 3),
                  })}
                >
                  <option value="zstd">zstd (fast, recommended)</option>
                  <option value="gzip">gzip (widest compatibility)</option>
                </select>
              </div>
              <div className="field">
                <label htmlFor="backup-level">
                  Level: <output htmlFor="backup-level">{values.level}</output>
                </label>
                <input id="backup-level" type="range" min={1} max={maxLevel} step={1} {...register("level", { valueAsNumber: true, min: 1, max: maxLevel })} aria-describedby="backup-level-hint" />
                <p className="hint" id="backup-level-hint">
                  1 is fastest; {maxLevel} is smallest. {values.compression === "zstd" ? "3 is the default." : "6 is the default."}
                </p>
              </div>
            </div>
          </Card>
        )}
        {step === 2 && <Review values={values} />}
        {step === 3 && jobId && (
          <Card title="4. Progress">
            <JobMonitor jobId={jobId} title="Backup progress" expectedStages={expectedStages("backup.create", { type: values.type })} renderResult={(job) => <Created job={job} />} />
          </Card>
        )}
        <ErrorBox error={submitError} title="The backup was not started" />
        <div className="wizard-nav">
          {step > 0 && step < 3 && (
            <button type="button" onClick={() => setStep(step - 1)} disabled={submitting}>
              Back
            </button>
          )}
          {step < 2 && (
            <button type="button" className="primary" onClick={next}>
              Next
            </button>
          )}
          {step === 2 && (
            <button type="button" className="primary" onClick={start} disabled={submitting}>
              {submitting ? "Starting…" : "Start backup"}
            </button>
          )}
          {step === 3 && (
            <>
              <button type="button" onClick={restart}>
                Another backup
              </button>
              <Link to="/backups" className="button">
                All backups
              </Link>
            </>
          )}
        </div>
      </form>
    </div>
  );
}

function Created({ job }: { job: Job }) {
  const id = (job.result?.backup_id as string | undefined) ?? job.target_id;
  return (
    <>
      The backup is complete and its manifest written.{" "}
      {id && (
        <Link to={`/backups/${id}`} data-testid="created-backup-link">
          Open the backup
        </Link>
      )}
    </>
  );
}

function Review({ values }: { values: WizardFields }) {
  const previous = useBackups({ page: 1, page_size: 1, type: values.type, status: "completed", sort: "completed_at", order: "desc" });
  const last = previous.data?.items[0];
  const req = toRequest(values);
  const seconds = last?.started_at && last.completed_at ? (Date.parse(last.completed_at) - Date.parse(last.started_at)) / 1000 : null;
  const what =
    values.type === "full"
      ? "The whole platform database, the study files (studies/ and uploads/) and the audit trail."
      : values.type === "database"
        ? "The whole platform database and the audit trail."
        : req.scope === "all"
          ? "All study files (studies/ and uploads/) and the audit trail."
          : `The files of ${req.scope} ${req.scope_ids?.join(", ")}, and the audit trail.`;
  return (
    <Card title="3. Review">
      <KeyValues
        items={[
          ["What will be backed up", what],
          ["Name", req.name ?? `${defaultName(values.type)} (assigned when it starts)`],
          ["Description", req.description ?? <span className="muted">none</span>],
          ["Compression", `${req.compression} level ${req.level}`],
          [
            "Estimated size",
            last ? `about ${formatBytes(last.file_size_compressed)} stored (${formatBytes(last.file_size_bytes)} before compression)` : previous.isLoading ? "estimating…" : "No earlier backup of this type to estimate from",
          ],
          ["Estimated time", last ? `about ${formatDuration(seconds)}` : "—"],
        ]}
      />
      {last && <p className="hint">Estimates come from the last {values.type} backup, {last.name}, completed {formatTime(last.completed_at)}.</p>}
      <p className="hint">The platform keeps running during the backup: the database is read from one consistent snapshot.</p>
    </Card>
  );
}
