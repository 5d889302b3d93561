/** Who is signed in: resolved from the session cookie at start, set by login, ended by logout
 * or by any 401 (idle or absolute timeout, a session ended elsewhere). */
import { createContext, useCallback, useContext, useEffect, useMemo, useState, type ReactNode } from "react";
import { useQueryClient } from "@tanstack/react-query";
import { ApiError, api, onUnauthorized, setCsrfToken, unwrap } from "./api/client";
import type { Role, SessionUser } from "./api/types";

type SessionState =
  | { status: "loading" }
  | { status: "signed-out"; notice: string | null }
  | { status: "signed-in"; user: SessionUser };

interface SessionApi {
  state: SessionState;
  login(username: string, password: string): Promise<void>;
  logout(): Promise<void>;
}

const SessionContext = createContext<SessionApi | null>(null);

export function SessionProvider({ children }: { children: ReactNode }) {
  const [state, setState] = useState<SessionState>({ status: "loading" });
  const queryClient = useQueryClient();

  useEffect(() => {
    let live = true;
    unwrap(api.GET("/api/v1/auth/me"))
      .then((me) => {
        if (!live) return;
        setCsrfToken(me.csrf_token);
        setState({
          status: "signed-in",
          user: { id: me.id, username: me.username, full_name: me.full_name, role: me.role },
        });
      })
      .catch(() => live && setState({ status: "signed-out", notice: null }));
    return () => {
      live = false;
    };
  }, []);

  useEffect(
    () =>
      onUnauthorized((message) => {
        setCsrfToken(null);
        queryClient.clear();
        setState((current) =>
          current.status === "signed-in"
            ? { status: "signed-out", notice: sessionEndedNotice(message) }
            : current,
        );
      }),
    [queryClient],
  );

  const login = useCallback(
    async (username: string, password: string) => {
      const out = await unwrap(api.POST("/api/v1/auth/login", { body: { username, password } }));
      setCsrfToken(out.csrf_token);
      queryClient.clear();
      setState({
        status: "signed-in",
        user: {
          id: out.user.id,
          username: out.user.username,
          full_name: out.user.full_name,
          role: out.user.role,
        },
      });
    },
    [queryClient],
  );

  const logout = useCallback(async () => {
    try {
      await unwrap(api.POST("/api/v1/auth/logout"));
    } catch (error) {
      if (!(error instanceof ApiError) || error.status !== 401) throw error;
    } finally {
      setCsrfToken(null);
      queryClient.clear();
    }
    setState({ status: "signed-out", notice: "You have signed out." });
  }, [queryClient]);

  const value = useMemo(() => ({ state, login, logout }), [state, login, logout]);
  return <SessionContext.Provider value={value}>{children}</SessionContext.Provider>;
}

export function sessionEndedNotice(serverMessage: string): string {
  const text = serverMessage.toLowerCase();
  if (text.includes("idle")) return "Your session expired after a period of inactivity. Sign in again to continue.";
  if (text.includes("absolute")) return "Your session reached its maximum length. Sign in again to continue.";
  if (text.includes("locked")) return "Your account has been locked after repeated failed attempts.";
  return "Your session has ended. Sign in again to continue.";
}

export function useSession(): SessionApi {
  const value = useContext(SessionContext);
  if (!value) throw new Error("useSession outside SessionProvider");
  return value;
}

/** The signed-in user (only inside the signed-in part of the app). */
export function useUser(): SessionUser {
  const { state } = useSession();
  if (state.status !== "signed-in") throw new Error("useUser while signed out");
  return state.user;
}

export function isAdmin(role: Role | undefined): boolean {
  return role === "SYSTEM_ADMIN";
}

export const ROLE_LABELS: Record<string, string> = {
  SYSTEM_ADMIN: "System administrator",
  AUDITOR: "Auditor",
};
