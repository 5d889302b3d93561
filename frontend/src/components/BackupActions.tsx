/** What an administrator can do with one backup: download, verify, restore, delete (signed).
 * Auditors never get here: the component renders nothing for them. */
import { useState } from "react";
import { deleteBackup, downloadUrl, useInvalidateBackups, verifyBackup } from "../api/queries";
import type { Backup } from "../api/types";
import { formatBytes, formatTime } from "../lib/format";
import { navigate } from "../lib/router";
import { isAdmin, useUser } from "../session";
import { Dialog } from "./Dialog";
import { JobMonitor } from "./JobMonitor";
import { SignatureDialog } from "./SignatureDialog";
import { ErrorBox } from "./ui";

type Props = { backup: Backup; compact?: boolean; onDeleted?(): void };

export function BackupActions({ backup, compact, onDeleted }: Props) {
  const user = useUser();
  const invalidate = useInvalidateBackups();
  const [deleting, setDeleting] = useState(false);
  const [purge, setPurge] = useState(false);
  const [verifyJob, setVerifyJob] = useState<string | null>(null);
  const [error, setError] = useState<unknown>(null);

  if (!isAdmin(user.role)) return null;
  const completed = backup.status === "completed" && !backup.deleted_at;
  const busy = backup.status === "pending" || backup.status === "in_progress";

  async function startVerify() {
    setError(null);
    try {
      const job = await verifyBackup(backup.id);
      setVerifyJob(job.job_id);
    } catch (e) {
      setError(e);
    }
  }

  return (
    <div className={compact ? "row-actions compact" : "row-actions"}>
      {completed ? (
        <a className="button" href={downloadUrl(backup.id)} download aria-label={`Download ${backup.name}`}>
          Download
        </a>
      ) : null}
      {!compact && completed && (
        <button type="button" onClick={startVerify} aria-label={`Validate integrity of ${backup.name}`}>
          Validate integrity
        </button>
      )}
      {!compact && completed && (
        <button type="button" onClick={() => navigate(`/restore?backup=${backup.id}`)} aria-label={`Restore from ${backup.name}`}>
          Restore…
        </button>
      )}
      {!backup.deleted_at && !busy && (
        <button
          type="button"
          className="danger-outline"
          onClick={() => setDeleting(true)}
          disabled={backup.legal_hold}
          title={backup.legal_hold ? "On legal hold: cannot be deleted" : undefined}
          aria-label={`Delete ${backup.name}`}
        >
          Delete
        </button>
      )}
      <ErrorBox error={error} title="Could not start" />
      {deleting && (
        <SignatureDialog
          title="Delete backup"
          username={user.username}
          fullName={user.full_name}
          meaning="Approved deletion"
          submitLabel="Sign and delete"
          summary={
            <>
              <p>
                You are deleting <strong>{backup.name}</strong> ({backup.type}, {formatBytes(backup.file_size_compressed)} stored,
                created {formatTime(backup.created_at)}). It will no longer be listed or restorable.
              </p>
              <label className="checkbox">
                <input type="checkbox" checked={purge} onChange={(e) => setPurge(e.target.checked)} />
                Also remove the stored files (purge). Without this, the bundle stays in storage and the catalog keeps the record.
              </label>
            </>
          }
          onClose={() => setDeleting(false)}
          onSign={async (signature) => {
            await deleteBackup(backup.id, signature, purge);
            setDeleting(false);
            invalidate();
            onDeleted?.();
          }}
        />
      )}
      {verifyJob && (
        <Dialog title={`Validate integrity — ${backup.name}`} onClose={() => setVerifyJob(null)} wide>
          <p className="muted">Every part of the bundle is re-read and checked against the SHA-256 in its manifest.</p>
          <JobMonitor
            jobId={verifyJob}
            expectedStages={["verify"]}
            onFinished={() => invalidate()}
            renderResult={(job) => <VerifyResult result={job.result} />}
          />
        </Dialog>
      )}
    </div>
  );
}

function VerifyResult({ result }: { result: Record<string, unknown> | null }) {
  if (!result) return <>The bundle matches its manifest.</>;
  const ok = result.ok ?? result.status;
  return (
    <>
      {ok === false || ok === "failed" ? "Problems were found: " : "The bundle matches its manifest. "}
      {typeof result.message === "string" ? result.message : null}
    </>
  );
}
