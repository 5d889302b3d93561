import { Fragment, useState } from "react";
import { auditExportUrl, useAudit, verifyAuditChain, type AuditQuery } from "../api/queries";
import type { ChainCheck } from "../api/types";
import { JsonView } from "../components/Json";
import { Pagination } from "../components/table";
import { Alert, EmptyState, ErrorBox, Loading, PageHeader, StatusBadge, Time } from "../components/ui";
import { useLocation } from "../lib/router";

const PAGE = 50;

type Filters = Omit<AuditQuery, "offset" | "limit">;

function toUtcIso(local: string): string | undefined {
  // The inputs take UTC wall-clock times (the trail's zone); send them with a Z.
  return local ? `${local}:00Z` : undefined;
}

export function AuditTrail() {
  const { search } = useLocation();
  const [draft, setDraft] = useState<Filters & { sinceText?: string; untilText?: string }>({
    target_id: search.get("target_id") ?? "",
    action: search.get("action") ?? "",
  });
  const [filters, setFilters] = useState<Filters>({ target_id: draft.target_id || undefined, action: draft.action || undefined });
  const [page, setPage] = useState(1);
  const [open, setOpen] = useState<string | null>(null);
  const audit = useAudit({ ...filters, offset: (page - 1) * PAGE, limit: PAGE });
  const [chain, setChain] = useState<ChainCheck | null>(null);
  const [chainError, setChainError] = useState<unknown>(null);
  const [verifying, setVerifying] = useState(false);

  async function verify() {
    setVerifying(true);
    setChainError(null);
    try {
      setChain(await verifyAuditChain());
    } catch (e) {
      setChainError(e);
    } finally {
      setVerifying(false);
    }
  }

  function apply(e: React.FormEvent) {
    e.preventDefault();
    setFilters({
      action: draft.action?.trim() || undefined,
      actor: draft.actor?.trim() || undefined,
      target_type: draft.target_type?.trim() || undefined,
      target_id: draft.target_id?.trim() || undefined,
      outcome: draft.outcome || undefined,
      since: toUtcIso(draft.sinceText ?? ""),
      until: toUtcIso(draft.untilText ?? ""),
    });
    setPage(1);
  }

  function clear() {
    setDraft({});
    setFilters({});
    setPage(1);
  }

  return (
    <div className="page">
      <PageHeader title="Audit trail" subtitle="Every action, success, failure and refusal: append-only and hash-chained. Times are recorded in UTC.">
        <button type="button" onClick={verify} disabled={verifying}>
          {verifying ? "Verifying…" : "Verify chain"}
        </button>
        <a className="button" href={auditExportUrl("csv")} download>
          Export CSV
        </a>
        <a className="button" href={auditExportUrl("json")} download>
          Export JSON
        </a>
      </PageHeader>
      <ErrorBox error={chainError} title="Verification failed to run" />
      {chain && (
        <Alert tone={chain.ok ? "ok" : "bad"} role="status">
          <StatusBadge status={chain.ok ? "verified" : "failed"} label={chain.ok ? "Chain intact" : "Chain broken"} />{" "}
          {chain.ok
            ? `All ${chain.events_checked.toLocaleString("en-US")} events checked: every hash matches and none is missing.`
            : `The chain breaks at event ${chain.first_bad_seq}: ${chain.problem}`}
          {chain.checked_at && <> (checked <Time value={chain.checked_at} seconds />)</>}
        </Alert>
      )}
      <form className="filters" onSubmit={apply} aria-label="Audit filters">
        <div className="field inline">
          <label htmlFor="audit-action">Action</label>
          <input id="audit-action" value={draft.action ?? ""} onChange={(e) => setDraft({ ...draft, action: e.target.value })} placeholder="backup.* or auth.login" />
        </div>
        <div className="field inline">
          <label htmlFor="audit-outcome">Outcome</label>
          <select id="audit-outcome" value={draft.outcome ?? ""} onChange={(e) => setDraft({ ...draft, outcome: (e.target.value || undefined) as Filters["outcome"] })}>
            <option value="">Any</option>
            <option value="success">Success</option>
            <option value="failure">Failure</option>
            <option value="denied">Denied</option>
          </select>
        </div>
        <div className="field inline">
          <label htmlFor="audit-target-type">Target type</label>
          <input id="audit-target-type" value={draft.target_type ?? ""} onChange={(e) => setDraft({ ...draft, target_type: e.target.value })} placeholder="backup" />
        </div>
        <div className="field inline">
          <label htmlFor="audit-target">Target id</label>
          <input id="audit-target" value={draft.target_id ?? ""} onChange={(e) => setDraft({ ...draft, target_id: e.target.value })} />
        </div>
        <div className="field inline">
          <label htmlFor="audit-actor">Actor id</label>
          <input id="audit-actor" value={draft.actor ?? ""} onChange={(e) => setDraft({ ...draft, actor: e.target.value })} />
        </div>
        <div className="field inline">
          <label htmlFor="audit-since">From (UTC)</label>
          <input id="audit-since" type="datetime-local" value={draft.sinceText ?? ""} onChange={(e) => setDraft({ ...draft, sinceText: e.target.value })} />
        </div>
        <div className="field inline">
          <label htmlFor="audit-until">Before (UTC)</label>
          <input id="audit-until" type="datetime-local" value={draft.untilText ?? ""} onChange={(e) => setDraft({ ...draft, untilText: e.target.value })} />
        </div>
        <button type="submit" className="primary">
          Apply filters
        </button>
        <button type="button" className="button-link" onClick={clear}>
          Clear
        </button>
      </form>
      <ErrorBox error={audit.error} title="Audit trail unavailable" onRetry={() => audit.refetch()} />
      {audit.isLoading ? (
        <Loading />
      ) : audit.data && audit.data.items.length ? (
        <>
          <div className="table-wrap" aria-busy={audit.isFetching}>
            <table className="table audit">
              <caption className="sr-only">Audit events, newest first</caption>
              <thead>
                <tr>
                  <th scope="col">#</th>
                  <th scope="col">When</th>
                  <th scope="col">Who</th>
                  <th scope="col">Action</th>
                  <th scope="col">Target</th>
                  <th scope="col">Outcome</th>
                  <th scope="col">Reason</th>
                  <th scope="col"><span className="sr-only">Details</span></th>
                </tr>
              </thead>
              <tbody>
                {audit.data.items.map((e) => (
                  <Fragment key={e.id}>
                    <tr data-action={e.action}>
                      <td className="num">{e.seq}</td>
                      <td><Time value={e.occurred_at} seconds /></td>
                      <td>{e.actor_name}</td>
                      <td><code>{e.action}</code></td>
                      <td>{e.target_type ? <>{e.target_type} <code title={e.target_id ?? undefined}>{(e.target_id ?? "").slice(0, 36)}</code></> : "—"}</td>
                      <td><StatusBadge status={e.outcome} /></td>
                      <td>{e.reason ?? <span className="muted">—</span>}</td>
                      <td>
                        <button type="button" className="button-link" aria-expanded={open === e.id} onClick={() => setOpen(open === e.id ? null : e.id)}>
                          {open === e.id ? "Hide" : "Details"}
                          <span className="sr-only"> of event {e.seq}</span>
                        </button>
                      </td>
                    </tr>
                    {open === e.id && (
                      <tr className="detail-row">
                        <td colSpan={8}>
                          <JsonView value={{ details: e.details, request_id: e.request_id, client_address: e.client_address, actor_id: e.actor_id }} />
                          <p className="hash-line">
                            hash <code className="hash">{e.hash}</code> · previous <code className="hash">{e.prev_hash}</code>
                          </p>
                        </td>
                      </tr>
                    )}
                  </Fragment>
                ))}
              </tbody>
            </table>
          </div>
          <Pagination page={page} pageSize={PAGE} total={audit.data.total} onPage={setPage} label="events" />
        </>
      ) : (
        <EmptyState title="No event matches these filters" />
      )}
    </div>
  );
}
