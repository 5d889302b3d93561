import { useEffect, useState } from "react";
import { useBackups, type BackupListQuery } from "../api/queries";
import { BackupActions } from "../components/BackupActions";
import { Pagination, SortHeader, type Sort } from "../components/table";
import { EmptyState, ErrorBox, Loading, PageHeader, StatusBadge, Time } from "../components/ui";
import { BACKUP_TYPES, formatBytes, formatPercent } from "../lib/format";
import { Link } from "../lib/router";
import { isAdmin, useUser } from "../session";

const PAGE_SIZE = 20;

export function BackupList() {
  const user = useUser();
  const [sort, setSort] = useState<Sort>({ column: "created_at", order: "desc" });
  const [page, setPage] = useState(1);
  const [type, setType] = useState<BackupListQuery["type"] | "">("");
  const [status, setStatus] = useState<BackupListQuery["status"] | "">("");
  const [searchText, setSearchText] = useState("");
  const [search, setSearch] = useState("");

  // Search as you type, without a request per key stroke.
  useEffect(() => {
    const timer = setTimeout(() => {
      setSearch(searchText.trim());
      setPage(1);
    }, 300);
    return () => clearTimeout(timer);
  }, [searchText]);

  const query: BackupListQuery = {
    page,
    page_size: PAGE_SIZE,
    sort: sort.column,
    order: sort.order,
    type: type || undefined,
    status: status || undefined,
    search: search || undefined,
  };
  const backups = useBackups(query, { refetchInterval: 15_000 });
  const onSort = (next: Sort) => {
    setSort(next);
    setPage(1);
  };
  const filtered = Boolean(type || status || search);

  return (
    <div className="page">
      <PageHeader title="Backups" subtitle={isAdmin(user.role) ? undefined : "Read-only view: backup actions are reserved for system administrators."}>
        {isAdmin(user.role) && (
          <Link to="/backups/new" className="button primary">
            New backup
          </Link>
        )}
      </PageHeader>
      <form className="filters" role="search" onSubmit={(e) => e.preventDefault()}>
        <div className="field inline">
          <label htmlFor="backup-search">Search by name</label>
          <input id="backup-search" type="search" value={searchText} onChange={(e) => setSearchText(e.target.value)} placeholder="e.g. before-upgrade" />
        </div>
        <div className="field inline">
          <label htmlFor="backup-type">Type</label>
          <select id="backup-type" value={type} onChange={(e) => { setType(e.target.value as BackupListQuery["type"]); setPage(1); }}>
            <option value="">All types</option>
            <option value="full">Full</option>
            <option value="database">Database only</option>
            <option value="files">Files only</option>
          </select>
        </div>
        <div className="field inline">
          <label htmlFor="backup-status">Status</label>
          <select id="backup-status" value={status} onChange={(e) => { setStatus(e.target.value as BackupListQuery["status"]); setPage(1); }}>
            <option value="">All statuses</option>
            <option value="completed">Completed</option>
            <option value="in_progress">In progress</option>
            <option value="pending">Pending</option>
            <option value="failed">Failed</option>
          </select>
        </div>
        {filtered && (
          <button type="button" className="button-link" onClick={() => { setType(""); setStatus(""); setSearchText(""); setPage(1); }}>
            Clear filters
          </button>
        )}
      </form>
      <ErrorBox error={backups.error} title="Backups unavailable" onRetry={() => backups.refetch()} />
      {backups.isLoading ? (
        <Loading />
      ) : backups.data && backups.data.items.length > 0 ? (
        <>
          <div className="table-wrap" aria-busy={backups.isFetching}>
            <table className="table">
              <caption className="sr-only">Backups, sorted by {sort.column} {sort.order === "asc" ? "ascending" : "descending"}</caption>
              <thead>
                <tr>
                  <SortHeader column="name" label="Name" sort={sort} onSort={onSort} />
                  <SortHeader column="type" label="Type" sort={sort} onSort={onSort} />
                  <SortHeader column="status" label="Status" sort={sort} onSort={onSort} />
                  <SortHeader column="file_size_compressed" label="Stored" sort={sort} onSort={onSort} className="num" />
                  <SortHeader column="compression_ratio" label="Saved" sort={sort} onSort={onSort} className="num" />
                  <SortHeader column="created_at" label="Created" sort={sort} onSort={onSort} />
                  <SortHeader column="created_by" label="By" sort={sort} onSort={onSort} />
                  <SortHeader column="verified_at" label="Verified" sort={sort} onSort={onSort} />
                  {isAdmin(user.role) && (
                    <th scope="col">
                      <span className="sr-only">Actions</span>
                    </th>
                  )}
                </tr>
              </thead>
              <tbody>
                {backups.data.items.map((b) => (
                  <tr key={b.id}>
                    <td>
                      <Link to={`/backups/${b.id}`}>{b.name}</Link>
                      {b.is_safety_backup && <span className="tag">safety</span>}
                      {b.legal_hold && <span className="tag">legal hold</span>}
                      {b.scope !== "all" && <span className="tag">{b.scope}: {b.scope_ids.join(", ")}</span>}
                    </td>
                    <td>{BACKUP_TYPES[b.type] ?? b.type}</td>
                    <td>
                      <StatusBadge status={b.deleted_at ? "deleted" : b.status} />
                    </td>
                    <td className="num">{formatBytes(b.file_size_compressed)}</td>
                    <td className="num">{b.compression_ratio !== null ? formatPercent(b.compression_ratio * 100) : "—"}</td>
                    <td>
                      <Time value={b.created_at} />
                    </td>
                    <td>{b.created_by}</td>
                    <td>{b.verify_status ? <StatusBadge status={b.verify_status} /> : <span className="muted">never</span>}</td>
                    {isAdmin(user.role) && (
                      <td>
                        <BackupActions backup={b} compact />
                      </td>
                    )}
                  </tr>
                ))}
              </tbody>
            </table>
          </div>
          <Pagination page={page} pageSize={PAGE_SIZE} total={backups.data.total} onPage={setPage} label="backups" />
        </>
      ) : (
        <EmptyState title={filtered ? "No backup matches these filters" : "No backups yet"}>
          {filtered ? "Change or clear the filters." : isAdmin(user.role) ? <Link to="/backups/new">Create the first backup</Link> : null}
        </EmptyState>
      )}
    </div>
  );
}
