import { useState } from "react";
import { useRestoreHistory } from "../api/queries";
import type { RestoreOperation } from "../api/types";
import { JsonView } from "../components/Json";
import { Pagination } from "../components/table";
import { EmptyState, ErrorBox, Loading, PageHeader, StatusBadge, Time } from "../components/ui";
import { formatDuration, humanize, shortId } from "../lib/format";
import { Link } from "../lib/router";

const PAGE = 20;

export function RestoreHistory() {
  const [page, setPage] = useState(1);
  const history = useRestoreHistory((page - 1) * PAGE, PAGE);
  return (
    <div className="page">
      <PageHeader title="Restore history" subtitle="Every restore, kept for ever with its validation results and the signature that approved it.">
        <Link to="/restore" className="button primary">
          New restore
        </Link>
      </PageHeader>
      <ErrorBox error={history.error} title="History unavailable" onRetry={() => history.refetch()} />
      {history.isLoading ? (
        <Loading />
      ) : history.data && history.data.items.length ? (
        <>
          <div className="history">
            {history.data.items.map((op) => (
              <RestoreRecord key={op.id} op={op} />
            ))}
          </div>
          <Pagination page={page} pageSize={PAGE} total={history.data.total} onPage={setPage} label="restores" />
        </>
      ) : (
        <EmptyState title="No restore has been run yet" />
      )}
    </div>
  );
}

function RestoreRecord({ op }: { op: RestoreOperation }) {
  const seconds = op.started_at && op.completed_at ? (Date.parse(op.completed_at) - Date.parse(op.started_at)) / 1000 : null;
  const checks = Array.isArray((op.validation_results as { checks?: unknown }).checks)
    ? ((op.validation_results as { checks: { name: string; ok: boolean; detail: string }[] }).checks)
    : [];
  return (
    <article className="card restore-record" aria-label={`Restore ${shortId(op.id)}`}>
      <header className="card-header">
        <h2>
          {humanize(op.scope)}
          {op.scope_ids.length ? ` ${op.scope_ids.join(", ")}` : ""} from <Link to={`/backups/${op.backup_id}`}>backup {shortId(op.backup_id)}</Link>
        </h2>
        <StatusBadge status={op.status} />
      </header>
      <p className="muted">
        Started <Time value={op.started_at} withAge /> by {op.restored_by} · took {formatDuration(seconds)}
        {op.safety_backup_id && (
          <>
            {" "}· safety backup <Link to={`/backups/${op.safety_backup_id}`}>{shortId(op.safety_backup_id)}</Link>
          </>
        )}
        {op.target_database && <> · into database <code>{op.target_database}</code></>}
      </p>
      {op.error && (
        <div className={`alert ${op.status === "rolled_back" ? "alert-warn" : "alert-bad"}`} role="note">
          {op.status === "rolled_back" ? "Rolled back: " : "Failed: "}
          {op.error}
        </div>
      )}
      {op.signatures.map((s) => (
        <p key={s.id} className="signature-line">
          <span aria-hidden="true">✍</span> Signed by <strong>{s.printed_name}</strong> — “{s.meaning}” — reason: {s.reason} — <Time value={s.signed_at} seconds />
        </p>
      ))}
      <details>
        <summary>Validation results{checks.length ? ` (${checks.filter((c) => c.ok).length}/${checks.length} checks passed)` : ""}</summary>
        {checks.length ? (
          <ul className="checks">
            {checks.map((c) => (
              <li key={c.name} className={c.ok ? "check-ok" : "check-bad"}>
                <span aria-hidden="true">{c.ok ? "✓" : "✕"}</span> <strong>{humanize(c.name)}</strong>
                <span className="sr-only">{c.ok ? " passed" : " failed"}</span>: {c.detail}
              </li>
            ))}
          </ul>
        ) : (
          <JsonView value={op.validation_results} />
        )}
      </details>
    </article>
  );
}
