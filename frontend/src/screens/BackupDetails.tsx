import { useMemo, useState } from "react";
import { useAudit, useBackup } from "../api/queries";
import type { BackupDetail } from "../api/types";
import { BackupActions } from "../components/BackupActions";
import { JsonView } from "../components/Json";
import { Pagination } from "../components/table";
import { Card, EmptyState, ErrorBox, KeyValues, Loading, PageHeader, StatusBadge, Time } from "../components/ui";
import { BACKUP_TYPES, formatBytes, formatDuration, formatPercent, humanize } from "../lib/format";
import { Link, navigate } from "../lib/router";

const FILES_PAGE = 100;

export function BackupDetails({ id }: { id: string }) {
  const [filesPage, setFilesPage] = useState(1);
  const details = useBackup(id, (filesPage - 1) * FILES_PAGE, FILES_PAGE);
  const b = details.data;

  if (details.isLoading) return <Loading label="Loading the backup…" />;
  if (!b)
    return (
      <div className="page">
        <PageHeader title="Backup" />
        <ErrorBox error={details.error} title="Backup unavailable" onRetry={() => details.refetch()} />
        <Link to="/backups">Back to backups</Link>
      </div>
    );

  const duration = b.started_at && b.completed_at ? (Date.parse(b.completed_at) - Date.parse(b.started_at)) / 1000 : null;
  const skipped = fileWarnings(b.metadata);

  return (
    <div className="page">
      <PageHeader
        title={b.name}
        subtitle={
          <>
            <StatusBadge status={b.deleted_at ? "deleted" : b.status} /> {BACKUP_TYPES[b.type]} · created <Time value={b.created_at} withAge /> by {b.created_by}
          </>
        }
      >
        <Link to="/backups">All backups</Link>
      </PageHeader>
      <BackupActions backup={b} onDeleted={() => navigate("/backups")} />
      {b.error && (
        <div className="alert alert-bad" role="alert">
          <strong>This backup failed.</strong> {b.error}
        </div>
      )}
      {b.manifest_error && (
        <div className="alert alert-warn" role="alert">
          The bundle could not be read: {b.manifest_error}
        </div>
      )}
      {skipped.shown.length > 0 && (
        <div className="alert alert-warn" role="status" aria-label="Not archived">
          <strong>{skipped.total === 1 ? "One item was not archived" : `${skipped.total.toLocaleString("en-US")} items were not archived`}</strong>
          <ul>
            {skipped.shown.map((w) => (
              <li key={w}>{w}</li>
            ))}
          </ul>
          {skipped.total > skipped.shown.length && <p>The manifest lists all of them (files.warnings).</p>}
        </div>
      )}
      <div className="grid-2">
        <Card title="Summary">
          <KeyValues
            items={[
              ["Backup id", <code key="id">{b.id}</code>],
              ["Type", BACKUP_TYPES[b.type] ?? b.type],
              ["Scope", b.scope === "all" ? "Everything" : `${humanize(b.scope)}: ${b.scope_ids.join(", ")}`],
              ["Description", b.description || <span className="muted">none</span>],
              ["Started", <Time key="s" value={b.started_at} seconds />],
              ["Completed", <Time key="c" value={b.completed_at} seconds />],
              ["Duration", formatDuration(duration)],
              ["Integrity check", b.verify_status ? <span key="v"><StatusBadge status={b.verify_status} /> <Time value={b.verified_at} /></span> : "Never verified"],
              ["Safety backup", b.is_safety_backup ? "Yes (taken before a restore)" : "No"],
              ["Legal hold", b.legal_hold ? "Yes: cannot be deleted" : "No"],
              ["Location", b.file_path ? <code key="p">{b.file_path}</code> : "—"],
              ...(b.deleted_at ? ([["Deleted", <Time key="d" value={b.deleted_at} />]] as [string, React.ReactNode][]) : []),
            ]}
          />
        </Card>
        <Card title="Compression">
          <KeyValues
            items={[
              ["Codec and level", `${b.compression} level ${b.compression_level}`],
              ["Original size", formatBytes(b.file_size_bytes)],
              ["Stored size", formatBytes(b.file_size_compressed)],
              ["Saved", b.file_size_bytes && b.file_size_compressed !== null ? `${formatBytes(b.file_size_bytes - b.file_size_compressed)} (${formatPercent((b.compression_ratio ?? 0) * 100)})` : "—"],
              ["Checksum (SHA-256 of manifest.json)", <code key="sum" className="hash">{b.checksum ?? "—"}</code>],
            ]}
          />
          <p className="hint">The checksum of the manifest proves the whole bundle: the manifest holds the SHA-256 of every part.</p>
        </Card>
      </div>
      <Card title="Parts and checksums">
        <Objects backup={b} />
      </Card>
      <Card title={`Files (${b.files_total.toLocaleString("en-US")})`}>
        <FileList backup={b} page={filesPage} onPage={setFilesPage} loading={details.isFetching} />
      </Card>
      <Card title="Signatures">
        {b.signatures.length ? (
          <Signatures backup={b} />
        ) : (
          <p className="muted">No signature has been applied to this backup (restores and deletions are signed).</p>
        )}
      </Card>
      <Card title="Metadata">
        {Object.keys(b.metadata).length ? <JsonView value={b.metadata} /> : <p className="muted">No metadata.</p>}
      </Card>
      <AuditForBackup id={b.id} />
    </div>
  );
}

/** What the files backup skipped (FIFOs, sockets, files that vanished or changed), as recorded in its metadata. */
function fileWarnings(metadata: Record<string, unknown>): { shown: string[]; total: number } {
  const raw = metadata.file_warnings;
  const shown = Array.isArray(raw) ? raw.filter((w): w is string => typeof w === "string") : [];
  const count = metadata.file_warning_count;
  return { shown, total: typeof count === "number" && count > shown.length ? count : shown.length };
}

function Objects({ backup }: { backup: BackupDetail }) {
  if (!backup.objects.length) return <EmptyState title="No stored objects" />;
  return (
    <table className="table">
      <thead>
        <tr>
          <th scope="col">Object</th>
          <th scope="col">Kind</th>
          <th scope="col">Codec</th>
          <th scope="col" className="num">Original</th>
          <th scope="col" className="num">Stored</th>
          <th scope="col" className="num">Saved</th>
          <th scope="col">SHA-256</th>
        </tr>
      </thead>
      <tbody>
        {backup.objects.map((o) => {
          const saved = o.compressed_size && o.size ? 1 - o.compressed_size / o.size : null;
          return (
            <tr key={o.name}>
              <td><code>{o.name}</code></td>
              <td>{humanize(o.kind)}</td>
              <td>{o.codec ? `${o.codec}${o.level ? ` ${o.level}` : ""}` : "—"}</td>
              <td className="num">{formatBytes(o.size)}</td>
              <td className="num">{formatBytes(o.compressed_size ?? o.size)}</td>
              <td className="num">{saved !== null ? formatPercent(saved * 100) : "—"}</td>
              <td><code className="hash" title={o.sha256 ?? undefined}>{o.sha256 ?? "—"}</code></td>
            </tr>
          );
        })}
      </tbody>
    </table>
  );
}

function FileList({ backup, page, onPage, loading }: { backup: BackupDetail; page: number; onPage(p: number): void; loading: boolean }) {
  const [filter, setFilter] = useState("");
  const shown = useMemo(() => {
    const needle = filter.trim().toLowerCase();
    return needle ? backup.files.filter((f) => f.path.toLowerCase().includes(needle)) : backup.files;
  }, [backup.files, filter]);
  if (backup.files_total === 0) return <EmptyState title="This backup holds no files" />;
  return (
    <>
      <div className="filters">
        <div className="field inline">
          <label htmlFor="file-filter">Search this page of files</label>
          <input id="file-filter" type="search" value={filter} onChange={(e) => setFilter(e.target.value)} placeholder="path contains…" />
        </div>
        <span className="muted" role="status">
          {filter ? `${shown.length} of ${backup.files.length} on this page match` : ""}
        </span>
      </div>
      <div className="table-wrap" aria-busy={loading}>
        <table className="table files">
          <caption className="sr-only">Files in the backup</caption>
          <thead>
            <tr>
              <th scope="col">Path</th>
              <th scope="col" className="num">Size</th>
              <th scope="col">Modified</th>
              <th scope="col">SHA-256</th>
            </tr>
          </thead>
          <tbody>
            {shown.map((f) => (
              <tr key={f.path}>
                <td><code>{f.path}</code>{f.kind !== "file" && <span className="tag">{f.kind}</span>}</td>
                <td className="num">{formatBytes(f.size)}</td>
                <td><Time value={new Date(f.mtime * 1000).toISOString()} /></td>
                <td><code className="hash" title={f.sha256 ?? undefined}>{f.sha256 ? `${f.sha256.slice(0, 16)}…` : "—"}</code></td>
              </tr>
            ))}
          </tbody>
        </table>
      </div>
      <Pagination page={page} pageSize={FILES_PAGE} total={backup.files_total} onPage={onPage} label="files" />
    </>
  );
}

function Signatures({ backup }: { backup: BackupDetail }) {
  return (
    <table className="table">
      <thead>
        <tr>
          <th scope="col">Signed by</th>
          <th scope="col">Meaning</th>
          <th scope="col">Reason</th>
          <th scope="col">When</th>
          <th scope="col">Operation</th>
        </tr>
      </thead>
      <tbody>
        {backup.signatures.map((s) => (
          <tr key={s.id}>
            <td>{s.printed_name}</td>
            <td>{s.meaning}</td>
            <td>{s.reason}</td>
            <td><Time value={s.signed_at} seconds /></td>
            <td>
              {String((s.operation as Record<string, unknown>).action ?? "")} <code className="hash" title={s.operation_hash}>{s.operation_hash.slice(0, 12)}…</code>
            </td>
          </tr>
        ))}
      </tbody>
    </table>
  );
}

function AuditForBackup({ id }: { id: string }) {
  const audit = useAudit({ offset: 0, limit: 50, target_type: "backup", target_id: id });
  return (
    <Card title="Audit events for this backup" actions={<Link to={`/audit?target_id=${id}`}>Open in audit trail</Link>}>
      <ErrorBox error={audit.error} title="Audit events unavailable" />
      {audit.data && audit.data.items.length ? (
        <table className="table">
          <thead>
            <tr>
              <th scope="col">#</th>
              <th scope="col">When</th>
              <th scope="col">Who</th>
              <th scope="col">Action</th>
              <th scope="col">Outcome</th>
              <th scope="col">Reason</th>
            </tr>
          </thead>
          <tbody>
            {audit.data.items.map((e) => (
              <tr key={e.id}>
                <td className="num">{e.seq}</td>
                <td><Time value={e.occurred_at} seconds /></td>
                <td>{e.actor_name}</td>
                <td><code>{e.action}</code></td>
                <td><StatusBadge status={e.outcome} /></td>
                <td>{e.reason ?? <span className="muted">—</span>}</td>
              </tr>
            ))}
          </tbody>
        </table>
      ) : audit.isLoading ? (
        <Loading />
      ) : (
        <p className="muted">No events recorded for this backup.</p>
      )}
    </Card>
  );
}
