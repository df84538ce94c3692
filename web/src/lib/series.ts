/**
 * Time series from `GET /api/series` made ready for a chart and for the table beside it. The
 * table shows the server's value strings as they are (a count, or USDT text): it is what screen
 * readers read and what the browser journeys compare with the API. The chart needs positions on
 * a canvas, so only there is a value read as a number: a pixel height, never a figure shown.
 */
import type { ChartSeries, HeartbeatHistory } from './api';

export interface SeriesTable {
	/** One heading per line of the series (its label), in the server's order. */
	columns: { key: string; label: string }[];
	/** One row per bucket: its first day, a readable period, and each line's value string. */
	rows: { t: string; period: string; values: string[] }[];
}

const MONTHS = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];

/**
 * "2026-11-01" as "Nov 2026" (month buckets) or "2026-11-01" (days); an instant
 * ("2026-11-12T09:01:05.000000Z", minute buckets) as "2026-11-12 09:01:05 UTC". From the text
 * alone.
 */
export function periodLabel(t: string, bucket: ChartSeries['bucket']): string {
	if (bucket === 'day') {
		return t;
	}
	if (bucket === 'minute') {
		return `${t.slice(0, 10)} ${t.slice(11, 19)} UTC`;
	}
	const [year, month] = t.split('-');
	const name = MONTHS[Number(month) - 1];
	return name ? `${name} ${year}` : t;
}

export function seriesTable(series: ChartSeries): SeriesTable {
	const columns = series.series.map((line) => ({ key: line.key, label: line.label }));
	const first = series.series[0]?.points ?? [];
	const rows = first.map((point, index) => ({
		t: point.t,
		period: periodLabel(point.t, series.bucket),
		values: series.series.map((line) => line.points[index]?.value ?? '')
	}));
	return { columns, rows };
}

/** The bucket's start (a day) or the instant (a sample) as Unix seconds (UTC), the x axis. */
export function bucketSeconds(t: string): number {
	if (t.includes('T')) {
		// Whole seconds: the fraction is the server's fixed six digits.
		return Date.parse(`${t.slice(0, 19)}Z`) / 1000;
	}
	return Date.parse(`${t}T00:00:00Z`) / 1000;
}

/** uPlot's columns: x (seconds), then one y column per line (canvas positions only). */
export function plotColumns(series: ChartSeries): (number | null)[][] {
	const first = series.series[0]?.points ?? [];
	return [
		first.map((point) => bucketSeconds(point.t)),
		// An empty value (a metric not sent) is a gap, not a zero.
		...series.series.map((line) =>
			line.points.map((point) => (point.value === '' ? null : Number(point.value)))
		)
	];
}

/** A day as the API writes it (YYYY-MM-DD, UTC). */
export function isoDay(date: Date): string {
	return date.toISOString().slice(0, 10);
}

/** A heartbeat metric a chart can draw: its key in the samples and its label with its unit. */
const HEARTBEAT_LINES = {
	cpu_percent: 'CPU %',
	running_jobs: 'Running jobs',
	memory_used_mb: 'Memory used (MB)',
	disk_used_gb: 'Disk used (GB)'
} as const;
type HeartbeatMetric = keyof typeof HEARTBEAT_LINES;

/**
 * A node's heartbeat samples as a chart of some of their metrics, one point per sample at its
 * instant. Values are the server's integers written out as they are; a metric the node did not
 * send is an empty cell.
 */
export function heartbeatSeries(
	history: HeartbeatHistory,
	metrics: HeartbeatMetric[]
): ChartSeries {
	return {
		bucket: 'minute',
		from: history.from,
		to: history.to,
		unit: 'mixed',
		series: metrics.map((key) => ({
			key,
			label: HEARTBEAT_LINES[key],
			points: history.samples.map((sample) => ({
				t: sample.at,
				value: sample.metrics[key] === undefined ? '' : String(sample.metrics[key])
			}))
		}))
	};
}
