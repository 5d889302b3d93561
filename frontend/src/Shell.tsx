/** The signed-in frame: sidebar (items by role, with live counts), header (who, zone, sign
 * out) and the page. Moves focus to the page title on navigation, for screen readers. */
import { useEffect, useRef, useState, type ReactNode } from "react";
import { useBackupStats, useJobs } from "./api/queries";
import { describeError } from "./api/client";
import { Link, useLocation } from "./lib/router";
import { browserZone, zoneLabel } from "./lib/format";
import { usePrefs } from "./prefs";
import { ROLE_LABELS, isAdmin, useSession, useUser } from "./session";
import type { Role } from "./api/types";

export interface NavItem {
  to: string;
  label: string;
  roles: Role[];
  icon: string;
  badge?: "running" | "failed";
  match?: (path: string) => boolean;
}

const BOTH: Role[] = ["SYSTEM_ADMIN", "AUDITOR"];
const ADMIN: Role[] = ["SYSTEM_ADMIN"];

export const NAV: NavItem[] = [
  { to: "/", label: "Dashboard", roles: ADMIN, icon: "◧", match: (p) => p === "/" },
  { to: "/backups", label: "Backups", roles: BOTH, icon: "▤", badge: "failed", match: (p) => p === "/backups" || (p.startsWith("/backups/") && p !== "/backups/new") },
  { to: "/backups/new", label: "New backup", roles: ADMIN, icon: "+" },
  { to: "/restore", label: "Restore", roles: ADMIN, icon: "↺", match: (p) => p === "/restore" },
  { to: "/restore/history", label: "Restore history", roles: ADMIN, icon: "☰" },
  { to: "/schedules", label: "Schedules", roles: ADMIN, icon: "◷" },
  { to: "/jobs", label: "Jobs", roles: ADMIN, icon: "⚙", badge: "running" },
  { to: "/audit", label: "Audit trail", roles: BOTH, icon: "✎" },
];

export function navFor(role: Role): NavItem[] {
  return NAV.filter((item) => item.roles.includes(role));
}

function Counts({ children }: { children(counts: { running: number; failed: number }): ReactNode }) {
  const jobs = useJobs({ status: "running", page_size: 1 }, 4000);
  const stats = useBackupStats();
  const running = jobs.data?.total ?? 0;
  const failed = stats.data?.by_status?.failed ?? 0;
  return <>{children({ running, failed })}</>;
}

function Sidebar({ counts }: { counts: { running: number; failed: number } }) {
  const user = useUser();
  const { path } = useLocation();
  return (
    <nav className="sidebar" aria-label="Main">
      <div className="brand">
        <span className="brand-mark" aria-hidden="true">
          CV
        </span>{" "}
        ClinVault
      </div>
      <ul>
        {navFor(user.role).map((item) => {
          const current = item.match ? item.match(path) : path === item.to;
          const count = item.badge ? counts[item.badge] : 0;
          return (
            <li key={item.to}>
              <Link to={item.to} aria-current={current ? "page" : undefined} className={current ? "nav-link current" : "nav-link"}>
                <span aria-hidden="true" className="nav-icon">
                  {item.icon}
                </span>
                {item.label}
                {count > 0 && (
                  <span className={`nav-badge nav-badge-${item.badge}`} aria-label={item.badge === "running" ? `${count} running` : `${count} failed`}>
                    {count}
                  </span>
                )}
              </Link>
            </li>
          );
        })}
      </ul>
      <p className="sidebar-foot muted">21 CFR Part 11 · every action is audited</p>
    </nav>
  );
}

function ZoneSwitch() {
  const { zone, setZone } = usePrefs();
  const local = browserZone();
  return (
    <label className="zone-switch">
      <span>Times in</span>
      <select value={zone} onChange={(e) => setZone(e.target.value)} aria-label="Time zone for displayed times">
        <option value="UTC">UTC</option>
        {local !== "UTC" && <option value={local}>{`${local} (${zoneLabel(local)})`}</option>}
      </select>
    </label>
  );
}

export function Shell({ children }: { children: ReactNode }) {
  const user = useUser();
  const { logout } = useSession();
  const { path } = useLocation();
  const main = useRef<HTMLElement>(null);
  const [signOutError, setSignOutError] = useState<string | null>(null);
  const first = useRef(true);

  useEffect(() => {
    if (first.current) {
      first.current = false;
      return;
    }
    const title = main.current?.querySelector<HTMLElement>("[data-page-title]");
    title?.focus();
  }, [path]);

  const frame = (counts: { running: number; failed: number }) => (
    <div className="shell">
      <a href="#main" className="skip-link">
        Skip to content
      </a>
      <Sidebar counts={counts} />
      <div className="shell-main">
        <header className="topbar">
          <ZoneSwitch />
          <div className="who" aria-label="Signed in user">
            <span className="who-name" data-testid="user-name">
              {user.full_name}
            </span>
            <span className="who-role" data-testid="user-role">
              {ROLE_LABELS[user.role] ?? user.role}
            </span>
          </div>
          <button type="button" onClick={() => logout().catch((e) => setSignOutError(describeError(e)))}>
            Sign out
          </button>
        </header>
        {signOutError && (
          <div className="alert alert-bad" role="alert">
            Sign-out failed: {signOutError}
          </div>
        )}
        <main id="main" ref={main} className="content">
          {children}
        </main>
      </div>
    </div>
  );

  return isAdmin(user.role) ? <Counts>{frame}</Counts> : frame({ running: 0, failed: 0 });
}
