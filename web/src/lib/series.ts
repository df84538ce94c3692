/**
 * Time series from `GET /api/series` made ready for a chart and for the table beside it. The
 * table shows the server's value strings as they are (a count, or USDT text): it is what screen
 * readers read and what the browser journeys compare with the API. The chart needs positions on
 * a canvas, so only there is a value read as a number: a pixel height, never a figure shown.
 */
import type { Series } from './api';

export interface SeriesTable {
	/** One heading per line of the series (its label), in the server's order. */
	columns: { key: string; label: string }[];
	/** One row per bucket: its first day, a readable period, and each line's value string. */
	rows: { t: string; period: string; values: string[] }[];
}

const MONTHS = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];

/** "2026-11-01" as "Nov 2026" (month buckets) or "2026-11-01" (days), from the text alone. */
export function periodLabel(t: string, bucket: Series['bucket']): string {
	if (bucket === 'day') {
		return t;
	}
	const [year, month] = t.split('-');
	const name = MONTHS[Number(month) - 1];
	return name ? `${name} ${year}` : t;
}

export function seriesTable(series: Series): SeriesTable {
	const columns = series.series.map((line) => ({ key: line.key, label: line.label }));
	const first = series.series[0]?.points ?? [];
	const rows = first.map((point, index) => ({
		t: point.t,
		period: periodLabel(point.t, series.bucket),
		values: series.series.map((line) => line.points[index]?.value ?? '')
	}));
	return { columns, rows };
}

/** The bucket's start as Unix seconds (UTC), the x axis of the chart. */
export function bucketSeconds(t: string): number {
	return Date.parse(`${t}T00:00:00Z`) / 1000;
}

/** uPlot's columns: x (seconds), then one y column per line (canvas positions only). */
export function plotColumns(series: Series): number[][] {
	const first = series.series[0]?.points ?? [];
	return [
		first.map((point) => bucketSeconds(point.t)),
		...series.series.map((line) => line.points.map((point) => Number(point.value)))
	];
}

/** A day as the API writes it (YYYY-MM-DD, UTC). */
export function isoDay(date: Date): string {
	return date.toISOString().slice(0, 10);
}
