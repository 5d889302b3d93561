/** Sortable column headers and pagination for the catalog's tables. */
export interface Sort {
  column: string;
  order: "asc" | "desc";
}

export function SortHeader({ column, label, sort, onSort, className }: { column: string; label: string; sort: Sort; onSort(next: Sort): void; className?: string }) {
  const active = sort.column === column;
  const next: Sort = { column, order: active && sort.order === "desc" ? "asc" : active ? "desc" : column === "name" ? "asc" : "desc" };
  return (
    <th scope="col" aria-sort={active ? (sort.order === "asc" ? "ascending" : "descending") : "none"} className={className}>
      <button type="button" className="sort-button" onClick={() => onSort(next)}>
        {label}
        <span aria-hidden="true" className="sort-icon">
          {active ? (sort.order === "asc" ? "▲" : "▼") : "↕"}
        </span>
      </button>
    </th>
  );
}

export function Pagination({ page, pageSize, total, onPage, label = "items" }: { page: number; pageSize: number; total: number; onPage(page: number): void; label?: string }) {
  const pages = Math.max(1, Math.ceil(total / pageSize));
  const first = total === 0 ? 0 : (page - 1) * pageSize + 1;
  const last = Math.min(total, page * pageSize);
  return (
    <nav className="pagination" aria-label={`Pages of ${label}`}>
      <span className="muted">
        {first}–{last} of {total.toLocaleString("en-US")} {label}
      </span>
      <button type="button" onClick={() => onPage(1)} disabled={page <= 1} aria-label="First page">
        «
      </button>
      <button type="button" onClick={() => onPage(page - 1)} disabled={page <= 1} aria-label="Previous page">
        Previous
      </button>
      <span aria-current="page">
        Page {page} of {pages}
      </span>
      <button type="button" onClick={() => onPage(page + 1)} disabled={page >= pages} aria-label="Next page">
        Next
      </button>
      <button type="button" onClick={() => onPage(pages)} disabled={page >= pages} aria-label="Last page">
        »
      </button>
    </nav>
  );
}
