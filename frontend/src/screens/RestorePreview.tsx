/** The safety check of a restore, in plain words: what is overwritten, which rows written
 * since the backup would be lost, what would break, and how long it should take. */
import type { RestorePreview } from "../api/types";
import { JsonView } from "../components/Json";
import { Alert, KeyValues, StatusBadge } from "../components/ui";
import { formatBytes, formatDuration, formatNumber, formatTime, humanize } from "../lib/format";
import { useZone } from "../prefs";

type Obj = Record<string, unknown>;
const obj = (v: unknown): Obj | null => (v && typeof v === "object" && !Array.isArray(v) ? (v as Obj) : null);
const arr = (v: unknown): unknown[] => (Array.isArray(v) ? v : []);
const num = (v: unknown): number | null => (typeof v === "number" ? v : null);

export function previewProblems(preview: RestorePreview): string[] {
  const validation = obj(preview.validation);
  return arr(validation?.problems).map(String);
}

export function canRestore(preview: RestorePreview): boolean {
  if (preview.can_restore === false) return false;
  const validation = obj(preview.validation);
  return validation?.ok !== false;
}

export function RestorePreviewView({ preview }: { preview: RestorePreview }) {
  const zone = useZone();
  const validation = obj(preview.validation);
  const db = obj(preview.database);
  const files = obj(preview.files);
  const estimate = obj(preview.estimate);
  const targets = arr(preview.targets).map((t) => String(obj(t)?.label ?? obj(t)?.key ?? t));
  const problems = previewProblems(preview);
  const warnings = arr(preview.warnings).map(String);
  const lost = num(db?.rows_modified_after_backup) ?? 0;
  const broken = arr(db?.broken_references);
  const tables = arr(db?.tables).map((t) => obj(t) ?? {});
  const changed = tables.filter((t) => t.action !== "unchanged" && t.action !== "keep");

  return (
    <div className="preview" data-testid="restore-preview">
      {problems.length > 0 ? (
        <Alert tone="bad" role="alert">
          <strong>The restore cannot run:</strong>
          <ul>
            {problems.map((p) => (
              <li key={p}>{p}</li>
            ))}
          </ul>
        </Alert>
      ) : (
        <Alert tone="ok" role="status">
          <StatusBadge status="passed" /> The backup passed validation{validation?.checks ? ` (${arr(validation.checks).length} checks)` : ""}.
        </Alert>
      )}
      {lost > 0 && (
        <Alert tone="warn" role="alert">
          <strong>{formatNumber(lost)} rows were written after the backup was taken</strong> ({formatTime(String(db?.modified_since ?? ""), zone)}) and would be
          lost.
        </Alert>
      )}
      {broken.length > 0 && (
        <Alert tone="warn" role="alert">
          <strong>{broken.length} references from outside the scope would break.</strong>
          <JsonView value={broken.slice(0, 20)} />
        </Alert>
      )}
      {warnings.map((w) => (
        <Alert key={w} tone="warn">
          {w}
        </Alert>
      ))}
      <KeyValues
        items={[
          ["Restoring from", `${String(obj(preview.backup)?.name ?? "")} (taken ${formatTime(String(obj(preview.backup)?.taken_at ?? ""), zone)})`],
          ["Scope", `${humanize(String(preview.scope ?? ""))}${targets.length ? `: ${targets.join(", ")}` : ""}`],
          ["Method", preview.method ? humanize(String(preview.method)) : "—"],
          [
            "Database",
            db ? (
              <>
                {db.tables_to_replace !== undefined && <>{formatNumber(num(db.tables_to_replace))} tables replaced · </>}
                {db.rows_to_delete !== undefined ? (
                  <>
                    {formatNumber(num(db.rows_to_delete))} rows deleted, {formatNumber(num(db.rows_to_insert))} inserted, {formatNumber(num(db.rows_to_update))} updated
                  </>
                ) : (
                  <>
                    {formatNumber(num(db.live_rows))} live rows replaced by {formatNumber(num(db.backup_rows))} from the backup
                  </>
                )}
                {num(db.tables_to_drop) ? <> · {formatNumber(num(db.tables_to_drop))} tables dropped</> : null}
              </>
            ) : (
              "Not touched"
            ),
          ],
          [
            "Files",
            files ? (
              <>
                {formatNumber(num(files.to_add))} added, {formatNumber(num(files.to_replace))} replaced, {formatNumber(num(files.to_remove))} removed,{" "}
                {formatNumber(num(files.unchanged))} unchanged ({formatBytes(num(files.bytes_to_write))} to write)
              </>
            ) : (
              "Not touched"
            ),
          ],
          ["Estimated time", estimate ? `about ${formatDuration(num(estimate.seconds))}${estimate.basis ? ` (${String(estimate.basis)})` : ""}` : "—"],
        ]}
      />
      {changed.length > 0 && (
        <details>
          <summary>Tables that change ({changed.length})</summary>
          <table className="table">
            <thead>
              <tr>
                <th scope="col">Table</th>
                <th scope="col">Action</th>
                <th scope="col" className="num">Live rows</th>
                <th scope="col" className="num">Rows in backup</th>
                <th scope="col" className="num">Modified after backup</th>
              </tr>
            </thead>
            <tbody>
              {changed.map((t) => (
                <tr key={String(t.table)}>
                  <td><code>{String(t.table)}</code></td>
                  <td>{humanize(String(t.action))}</td>
                  <td className="num">{formatNumber(num(t.live_rows))}</td>
                  <td className="num">{formatNumber(num(t.backup_rows))}</td>
                  <td className="num">{formatNumber(num(t.modified_after_backup))}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </details>
      )}
      {files && obj(files.examples) && (
        <details>
          <summary>Examples of file changes</summary>
          <JsonView value={files.examples} />
        </details>
      )}
      <details>
        <summary>Full preview report</summary>
        <pre className="json-pre">{JSON.stringify(preview, null, 2)}</pre>
      </details>
    </div>
  );
}
