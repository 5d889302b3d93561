import { lazy, Suspense, useState, type ReactNode } from "react";
import { QueryClient, QueryClientProvider } from "@tanstack/react-query";
import { ApiError } from "./api/client";
import { Forbidden, Loading, PageHeader } from "./components/ui";
import { Link, matchPath, navigate, useLocation } from "./lib/router";
import { PrefsProvider } from "./prefs";
import { SessionProvider, isAdmin, useSession } from "./session";
import { Shell } from "./Shell";
import { Login } from "./screens/Login";
import { BackupList } from "./screens/BackupList";
import { BackupDetails } from "./screens/BackupDetails";
import { BackupWizard } from "./screens/BackupWizard";
import { RestoreWizard } from "./screens/RestoreWizard";
import { RestoreHistory } from "./screens/RestoreHistory";
import { Schedules } from "./screens/Schedules";
import { AuditTrail } from "./screens/AuditTrail";
import { Jobs } from "./screens/Jobs";
import type { Role } from "./api/types";

// The dashboard carries the charts library: loaded on its own.
const Dashboard = lazy(() => import("./screens/Dashboard"));

export function makeQueryClient(): QueryClient {
  return new QueryClient({
    defaultOptions: {
      queries: {
        staleTime: 5_000,
        refetchOnWindowFocus: true,
        retry: (count, error) => !(error instanceof ApiError && error.status < 500) && count < 2,
      },
    },
  });
}

interface Route {
  pattern: string;
  roles: Role[];
  render(params: Record<string, string>): ReactNode;
}

const ADMIN: Role[] = ["SYSTEM_ADMIN"];
const BOTH: Role[] = ["SYSTEM_ADMIN", "AUDITOR"];

export const ROUTES: Route[] = [
  { pattern: "/", roles: ADMIN, render: () => <Dashboard /> },
  { pattern: "/backups", roles: BOTH, render: () => <BackupList /> },
  { pattern: "/backups/new", roles: ADMIN, render: () => <BackupWizard /> },
  { pattern: "/backups/:id", roles: BOTH, render: (p) => <BackupDetails id={p.id} /> },
  { pattern: "/restore", roles: ADMIN, render: () => <RestoreWizard /> },
  { pattern: "/restore/history", roles: ADMIN, render: () => <RestoreHistory /> },
  { pattern: "/schedules", roles: ADMIN, render: () => <Schedules /> },
  { pattern: "/jobs", roles: ADMIN, render: () => <Jobs /> },
  { pattern: "/audit", roles: BOTH, render: () => <AuditTrail /> },
];

function home(role: Role): string {
  return isAdmin(role) ? "/" : "/audit";
}

function Routed({ role }: { role: Role }) {
  const { path } = useLocation();
  if (path === "/login") {
    navigate(home(role), { replace: true });
    return null;
  }
  if (path === "/" && !isAdmin(role)) {
    navigate(home(role), { replace: true });
    return null;
  }
  for (const route of ROUTES) {
    const params = matchPath(route.pattern, path);
    if (!params) continue;
    if (!route.roles.includes(role)) return <Forbidden />;
    return <Suspense fallback={<Loading />}>{route.render(params)}</Suspense>;
  }
  return (
    <div className="page">
      <PageHeader title="Page not found" />
      <p>
        There is no page at <code>{path}</code>. <Link to={home(role)}>Go to the start page</Link>.
      </p>
    </div>
  );
}

function Gate() {
  const { state } = useSession();
  if (state.status === "loading") return <Loading label="Checking your session…" />;
  if (state.status === "signed-out") return <Login notice={state.notice} />;
  return (
    <Shell>
      <Routed role={state.user.role} />
    </Shell>
  );
}

export function App({ client }: { client?: QueryClient }) {
  const [queryClient] = useState(() => client ?? makeQueryClient());
  return (
    <QueryClientProvider client={queryClient}>
      <PrefsProvider>
        <SessionProvider>
          <Gate />
        </SessionProvider>
      </PrefsProvider>
    </QueryClientProvider>
  );
}
