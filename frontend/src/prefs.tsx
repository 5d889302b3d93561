/** Display preferences: the time zone times are shown in (UTC by default, as recorded). */
import { createContext, useContext, useState, type ReactNode } from "react";
import { browserZone } from "./lib/format";

interface Prefs {
  zone: string;
  setZone(zone: string): void;
}

const PrefsContext = createContext<Prefs>({ zone: "UTC", setZone: () => undefined });
const KEY = "clinvault.zone";

export function PrefsProvider({ children }: { children: ReactNode }) {
  const [zone, setZoneState] = useState<string>(() => {
    try {
      return localStorage.getItem(KEY) ?? "UTC";
    } catch {
      return "UTC";
    }
  });
  function setZone(next: string) {
    setZoneState(next);
    try {
      localStorage.setItem(KEY, next);
    } catch {
      /* private mode: the choice lasts for this page only */
    }
  }
  return <PrefsContext.Provider value={{ zone, setZone }}>{children}</PrefsContext.Provider>;
}

export function useZone(): string {
  return useContext(PrefsContext).zone;
}

export function usePrefs(): Prefs {
  return useContext(PrefsContext);
}

export { browserZone };
