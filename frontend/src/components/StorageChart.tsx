import { Area, Bar, CartesianGrid, ComposedChart, ResponsiveContainer, Tooltip, XAxis, YAxis } from "recharts";
import type { UsageDay } from "../api/types";
import { formatBytes } from "../lib/format";

/** Storage used at the end of each day, and bytes added that day. */
export default function StorageChart({ days }: { days: UsageDay[] }) {
  const data = days.map((d) => ({ ...d, label: d.date.slice(5) }));
  const latest = days[days.length - 1];
  return (
    <figure className="chart" aria-label="Storage used per day">
      <ResponsiveContainer width="100%" height={220}>
        <ComposedChart data={data} margin={{ top: 8, right: 8, bottom: 0, left: 8 }}>
          <CartesianGrid strokeDasharray="3 3" stroke="#e3e7ee" />
          <XAxis dataKey="label" tick={{ fontSize: 11 }} interval="preserveStartEnd" />
          <YAxis tickFormatter={(v: number) => formatBytes(v, 0)} tick={{ fontSize: 11 }} width={64} />
          <Tooltip
            formatter={(value, name) => [formatBytes(Number(value)), name === "storage_used_bytes" ? "Storage used" : "Added that day"]}
            labelFormatter={(_, payload) => (payload?.[0]?.payload?.date ? `${payload[0].payload.date} (UTC)` : "")}
          />
          <Area type="monotone" dataKey="storage_used_bytes" stroke="#1f4e79" fill="#cfe0f1" isAnimationActive={false} />
          <Bar dataKey="bytes_added" fill="#7aa6cf" barSize={6} isAnimationActive={false} />
        </ComposedChart>
      </ResponsiveContainer>
      <figcaption className="muted">
        {latest ? `${formatBytes(latest.storage_used_bytes)} stored on ${latest.date}; bars show bytes added per day.` : ""}
      </figcaption>
    </figure>
  );
}

