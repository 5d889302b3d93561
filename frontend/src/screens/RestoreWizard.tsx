/** Restore in four steps: choose a backup (and check its integrity), choose what to restore,
 * the safety check (preview, safety backup, confirmation, electronic signature), and the
 * live run until it succeeds, fails, or is rolled back. */
import { useEffect, useMemo, useState } from "react";
import { executeRestore, previewRestore, useBackup, useBackups, validateRestore } from "../api/queries";
import type { Backup, Job, RestorePreview, RestoreScopeName, ValidationOut } from "../api/types";
import { JobMonitor } from "../components/JobMonitor";
import { SignatureDialog } from "../components/SignatureDialog";
import { Steps } from "../components/Steps";
import { Pagination } from "../components/table";
import { Alert, Card, EmptyState, ErrorBox, KeyValues, Loading, PageHeader, StatusBadge, Time } from "../components/ui";
import { BACKUP_TYPES, formatBytes, humanize } from "../lib/format";
import { Link, useLocation } from "../lib/router";
import { useUser } from "../session";
import { RestorePreviewView, canRestore } from "./RestorePreview";
import { expectedStages } from "./stages";

const STEPS = ["Backup", "What to restore", "Safety check", "Restore"];

const SCOPES: { value: RestoreScopeName; label: string; help: string; needs: ("database" | "files")[] }[] = [
  { value: "full", label: "Full restore", help: "Replace the whole database and all study files.", needs: ["database", "files"] },
  { value: "database", label: "Database only", help: "Replace the whole database; files stay as they are.", needs: ["database"] },
  { value: "files", label: "Files only", help: "Replace the study files; the database stays as it is.", needs: ["files"] },
  { value: "study", label: "One study", help: "Only that study's rows and files come back; nothing else changes.", needs: ["database"] },
  { value: "organization", label: "One organization", help: "Only that organization's rows and files (its studies included).", needs: ["database"] },
];

function partsOf(type: string): ("database" | "files")[] {
  return type === "full" ? ["database", "files"] : type === "database" ? ["database"] : ["files"];
}

export function RestoreWizard() {
  const user = useUser();
  const { search } = useLocation();
  const [step, setStep] = useState(0);
  const [backup, setBackup] = useState<Backup | null>(null);
  const [scope, setScope] = useState<RestoreScopeName>("full");
  const [ids, setIds] = useState("");
  const [safety, setSafety] = useState(true);
  const [confirmed, setConfirmed] = useState(false);
  const [signing, setSigning] = useState(false);
  const [jobId, setJobId] = useState<string | null>(null);
  const [preview, setPreview] = useState<RestorePreview | null>(null);
  const [previewError, setPreviewError] = useState<unknown>(null);
  const [previewing, setPreviewing] = useState(false);
  const preselected = search.get("backup");

  const idList = ids.split(",").map((s) => s.trim()).filter(Boolean);
  const granular = scope === "study" || scope === "organization";

  async function runPreview() {
    if (!backup) return;
    setPreview(null);
    setPreviewError(null);
    setPreviewing(true);
    try {
      setPreview(await previewRestore({ backup_id: backup.id, scope, ids: granular ? idList : [] }));
    } catch (e) {
      setPreviewError(e);
    } finally {
      setPreviewing(false);
    }
  }

  function goTo(next: number) {
    setStep(next);
    if (next === 2) {
      setConfirmed(false);
      void runPreview();
    }
  }

  const scopeSummary = `${SCOPES.find((s) => s.value === scope)?.label}${granular ? ` ${idList.join(", ")}` : ""}`;

  return (
    <div className="page">
      <PageHeader title="Restore" subtitle="Bring the platform, or part of it, back to the state of a backup. Every restore is validated first and needs your electronic signature." />
      <Steps steps={STEPS} current={step} />
      {step === 0 && (
        <ChooseBackup
          selected={backup}
          preselected={preselected}
          onSelect={(b) => {
            setBackup(b);
            setScope(b.type === "full" ? "full" : (b.type as RestoreScopeName));
          }}
        />
      )}
      {step === 1 && backup && (
        <Card title="2. What to restore">
          <fieldset className="choices">
            <legend>Restore scope</legend>
            {SCOPES.map((s) => {
              const available = s.needs.every((p) => partsOf(backup.type).includes(p));
              return (
                <label key={s.value} className={`choice ${scope === s.value ? "selected" : ""} ${available ? "" : "disabled"}`}>
                  <input type="radio" name="scope" value={s.value} checked={scope === s.value} disabled={!available} onChange={() => setScope(s.value)} />
                  <span>
                    <strong>{s.label}</strong>
                    <span className="muted">{available ? s.help : `Not in this backup (${BACKUP_TYPES[backup.type]}).`}</span>
                  </span>
                </label>
              );
            })}
          </fieldset>
          {granular && <ScopeIds backupId={backup.id} scope={scope} value={ids} onChange={setIds} />}
        </Card>
      )}
      {step === 2 && backup && (
        <Card title="3. Safety check">
          {previewing && <Loading label="Comparing the backup with the live platform…" />}
          <ErrorBox error={previewError} title="The preview failed" onRetry={runPreview} />
          {preview && <RestorePreviewView preview={preview} />}
          {preview && canRestore(preview) && (
            <div className="safety">
              <label className="checkbox">
                <input type="checkbox" checked={safety} onChange={(e) => setSafety(e.target.checked)} />
                <span>
                  <strong>Take a safety backup first</strong> (recommended): the current state is backed up before anything changes, so the restore can be
                  undone.
                </span>
              </label>
              <label className="checkbox confirm">
                <input type="checkbox" checked={confirmed} onChange={(e) => setConfirmed(e.target.checked)} />
                <span>
                  I understand that this restore <strong>replaces live data</strong> ({scopeSummary} from {backup.name}) and that changes made after the backup
                  will be lost.
                </span>
              </label>
            </div>
          )}
        </Card>
      )}
      {step === 3 && jobId && (
        <Card title="4. Restore">
          <JobMonitor jobId={jobId} title="Restore progress" expectedStages={expectedStages("restore.execute", { scope })} renderResult={(job) => <Restored job={job} />} />
        </Card>
      )}
      <div className="wizard-nav">
        {step > 0 && step < 3 && (
          <button type="button" onClick={() => setStep(step - 1)}>
            Back
          </button>
        )}
        {step === 0 && (
          <button type="button" className="primary" disabled={!backup} onClick={() => goTo(1)}>
            Next
          </button>
        )}
        {step === 1 && (
          <button type="button" className="primary" disabled={granular && idList.length === 0} onClick={() => goTo(2)}>
            Next: safety check
          </button>
        )}
        {step === 2 && (
          <button type="button" className="danger" disabled={!preview || !canRestore(preview) || !confirmed} onClick={() => setSigning(true)}>
            Sign and restore…
          </button>
        )}
        {step === 3 && (
          <Link to="/restore/history" className="button">
            Restore history
          </Link>
        )}
      </div>
      {signing && backup && (
        <SignatureDialog
          title="Sign the restore"
          username={user.username}
          fullName={user.full_name}
          meaning="Approved restore"
          submitLabel="Sign and start restore"
          summary={
            <p>
              Restore <strong>{scopeSummary}</strong> from <strong>{backup.name}</strong> ({BACKUP_TYPES[backup.type]}, taken <Time value={backup.completed_at ?? backup.created_at} />)
              {safety ? ", after a safety backup" : ", without a safety backup"}.
            </p>
          }
          onClose={() => setSigning(false)}
          onSign={async (signature) => {
            const accepted = await executeRestore({
              backup_id: backup.id,
              scope,
              ids: granular ? idList : [],
              safety_backup: safety,
              confirm: true,
              signature,
            });
            setSigning(false);
            setJobId(accepted.job_id);
            setStep(3);
          }}
        />
      )}
    </div>
  );
}

function Restored({ job }: { job: Job }) {
  const result = job.result ?? {};
  const status = String(result.status ?? "completed");
  return (
    <>
      {status === "completed" ? "The data is restored and validated." : `Restore ${humanize(status)}.`}{" "}
      {typeof result.safety_backup_id === "string" && (
        <>
          A safety backup was taken first: <Link to={`/backups/${result.safety_backup_id}`}>open it</Link>.{" "}
        </>
      )}
      <Link to="/restore/history">See it in the restore history</Link>.
    </>
  );
}

function ChooseBackup({ selected, preselected, onSelect }: { selected: Backup | null; preselected: string | null; onSelect(b: Backup): void }) {
  const [page, setPage] = useState(1);
  const [search, setSearch] = useState("");
  const list = useBackups({ page, page_size: 10, status: "completed", sort: "created_at", order: "desc", search: search || undefined });
  const pre = useBackup(preselected ?? "", 0, 0);
  const [validation, setValidation] = useState<ValidationOut | null>(null);
  const [validating, setValidating] = useState(false);
  const [validationError, setValidationError] = useState<unknown>(null);

  useEffect(() => {
    if (preselected && pre.data && !selected && pre.data.status === "completed") onSelect(pre.data);
  }, [preselected, pre.data, selected, onSelect]);

  useEffect(() => {
    setValidation(null);
    setValidationError(null);
  }, [selected?.id]);

  async function check() {
    if (!selected) return;
    setValidating(true);
    setValidationError(null);
    try {
      setValidation(await validateRestore(selected.id));
    } catch (e) {
      setValidationError(e);
    } finally {
      setValidating(false);
    }
  }

  return (
    <div className="grid-2">
      <Card title="1. Choose a backup">
        <div className="field">
          <label htmlFor="restore-search">Search completed backups</label>
          <input id="restore-search" type="search" value={search} onChange={(e) => { setSearch(e.target.value); setPage(1); }} />
        </div>
        <ErrorBox error={list.error} title="Backups unavailable" />
        {list.isLoading ? (
          <Loading />
        ) : list.data && list.data.items.length ? (
          <>
            <fieldset className="backup-choices">
              <legend className="sr-only">Backup to restore from</legend>
              {list.data.items.map((b) => (
                <label key={b.id} className={`choice compact ${selected?.id === b.id ? "selected" : ""}`}>
                  <input type="radio" name="backup" value={b.id} checked={selected?.id === b.id} onChange={() => onSelect(b)} />
                  <span>
                    <strong>{b.name}</strong>
                    <span className="muted">
                      {BACKUP_TYPES[b.type]} · <Time value={b.completed_at ?? b.created_at} /> · {formatBytes(b.file_size_compressed)}
                      {b.scope !== "all" && ` · ${b.scope} ${b.scope_ids.join(", ")}`}
                    </span>
                  </span>
                </label>
              ))}
            </fieldset>
            <Pagination page={page} pageSize={10} total={list.data.total} onPage={setPage} label="backups" />
          </>
        ) : (
          <EmptyState title="No completed backup to restore from" />
        )}
      </Card>
      <Card title="Selected backup">
        {selected ? (
          <>
            <KeyValues
              items={[
                ["Name", <Link key="n" to={`/backups/${selected.id}`}>{selected.name}</Link>],
                ["Type", BACKUP_TYPES[selected.type]],
                ["Taken", <Time key="t" value={selected.completed_at ?? selected.created_at} withAge />],
                ["Created by", selected.created_by],
                ["Size", `${formatBytes(selected.file_size_compressed)} stored, ${formatBytes(selected.file_size_bytes)} original`],
                ["Checksum", <code key="c" className="hash">{selected.checksum}</code>],
                ["Last integrity check", selected.verify_status ? <span key="v"><StatusBadge status={selected.verify_status} /> <Time value={selected.verified_at} /></span> : "never"],
              ]}
            />
            <button type="button" onClick={check} disabled={validating}>
              {validating ? "Checking…" : "Check integrity"}
            </button>
            <ErrorBox error={validationError} title="The check failed" />
            {validation && <ValidationResult validation={validation} />}
          </>
        ) : (
          <p className="muted">Choose a backup on the left to see its details.</p>
        )}
      </Card>
    </div>
  );
}

export function ValidationResult({ validation }: { validation: ValidationOut }) {
  return (
    <div className="validation" data-testid="validation-result">
      <Alert tone={validation.ok ? "ok" : "bad"} role="status">
        <StatusBadge status={validation.ok ? "passed" : "failed"} /> {validation.ok ? "Every check passed." : "Some checks failed: this backup cannot be restored as it is."}
      </Alert>
      <ul className="checks">
        {validation.checks.map((c) => (
          <li key={c.name} className={c.ok ? "check-ok" : "check-bad"}>
            <span aria-hidden="true">{c.ok ? "✓" : "✕"}</span> <strong>{humanize(c.name)}</strong>
            <span className="sr-only">{c.ok ? " passed" : " failed"}</span>: {c.detail}
          </li>
        ))}
      </ul>
    </div>
  );
}

/** Study or organization codes, suggested from the directories in the backup's file index. */
function ScopeIds({ backupId, scope, value, onChange }: { backupId: string; scope: RestoreScopeName; value: string; onChange(v: string): void }) {
  const details = useBackup(backupId, 0, 5000);
  const suggestions = useMemo(() => {
    const root = scope === "study" ? "studies/" : "uploads/";
    const found = new Set<string>();
    for (const f of details.data?.files ?? []) {
      if (f.path.startsWith(root)) {
        const name = f.path.slice(root.length).split("/")[0];
        if (name) found.add(name);
      }
    }
    return [...found].sort();
  }, [details.data, scope]);
  const label = scope === "study" ? "Study code or id" : "Organization code or id";
  return (
    <div className="field">
      <label htmlFor="restore-ids">{label}</label>
      <input id="restore-ids" list="restore-id-suggestions" value={value} onChange={(e) => onChange(e.target.value)} placeholder={suggestions[0] ? `e.g. ${suggestions[0]}` : ""} />
      <datalist id="restore-id-suggestions">
        {suggestions.map((s) => (
          <option key={s} value={s} />
        ))}
      </datalist>
      {suggestions.length > 0 && (
        <p className="hint">
          In this backup: {suggestions.slice(0, 12).map((s, i) => (
            <span key={s}>
              {i > 0 && ", "}
              <button type="button" className="button-link" onClick={() => onChange(s)}>
                {s}
              </button>
            </span>
          ))}
          {suggestions.length > 12 && ` and ${suggestions.length - 12} more`}
        </p>
      )}
      {!value.trim() && <p className="hint">Required: which {scope} to restore.</p>}
    </div>
  );
}
