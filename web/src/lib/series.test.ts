import { describe, expect, it } from 'vitest';
import type { HeartbeatHistory, Series } from './api';
import { heartbeatSeries, periodLabel, plotColumns, seriesTable } from './series';

const revenue: Series = {
	metric: 'revenue',
	bucket: 'month',
	scope: 'platform',
	id: null,
	from: '2026-10-01',
	to: '2026-11-01',
	group_by: 'type',
	unit: 'usdt',
	series: [
		{
			key: 'api_subscription',
			label: 'API subscriptions',
			points: [
				{ t: '2026-10-01', value: '0.000000' },
				{ t: '2026-11-01', value: '100.000000' }
			]
		},
		{
			key: 'job',
			label: 'Compute jobs',
			points: [
				{ t: '2026-10-01', value: '12.345678' },
				{ t: '2026-11-01', value: '10.000000' }
			]
		}
	]
};

describe('series tables', () => {
	it('keep the server value strings, one row per bucket and one column per line', () => {
		const table = seriesTable(revenue);
		expect(table.columns.map((c) => c.label)).toEqual(['API subscriptions', 'Compute jobs']);
		expect(table.rows).toEqual([
			{ t: '2026-10-01', period: 'Oct 2026', values: ['0.000000', '12.345678'] },
			{ t: '2026-11-01', period: 'Nov 2026', values: ['100.000000', '10.000000'] }
		]);
	});

	it('name months from the text and leave days as they are', () => {
		expect(periodLabel('2026-01-01', 'month')).toBe('Jan 2026');
		expect(periodLabel('2026-01-05', 'day')).toBe('2026-01-05');
	});

	it('give the chart x in UTC seconds and a column per line', () => {
		const [x, api, job] = plotColumns(revenue);
		expect(x).toEqual([Date.UTC(2026, 9, 1) / 1000, Date.UTC(2026, 10, 1) / 1000]);
		expect(api).toEqual([0, 100]);
		expect(job?.[0]).toBeCloseTo(12.345678);
	});
});

const beats: HeartbeatHistory = {
	node_id: 'n1',
	from: '2026-11-11T09:00:00.000000Z',
	to: '2026-11-12T09:00:00.000000Z',
	sample_secs: 60,
	keep_secs: 2592000,
	samples: [
		{
			at: '2026-11-12T08:58:00.000000Z',
			metrics: { cpu_percent: 7, memory_used_mb: 1024, disk_used_gb: 3, running_jobs: 0 }
		},
		{ at: '2026-11-12T08:59:15.000000Z', metrics: { cpu_percent: 63, running_jobs: 1 } }
	]
};

describe('heartbeat series', () => {
	it('have one row per sample at its instant, the metrics written out as sent', () => {
		const load = heartbeatSeries(beats, ['cpu_percent', 'running_jobs']);
		expect(load.bucket).toBe('minute');
		expect(seriesTable(load)).toEqual({
			columns: [
				{ key: 'cpu_percent', label: 'CPU %' },
				{ key: 'running_jobs', label: 'Running jobs' }
			],
			rows: [
				{ t: '2026-11-12T08:58:00.000000Z', period: '2026-11-12 08:58:00 UTC', values: ['7', '0'] },
				{ t: '2026-11-12T08:59:15.000000Z', period: '2026-11-12 08:59:15 UTC', values: ['63', '1'] }
			]
		});
	});

	it('leave a metric not sent empty in the table and a gap in the chart', () => {
		const memory = heartbeatSeries(beats, ['memory_used_mb', 'disk_used_gb']);
		expect(seriesTable(memory).rows[1]?.values).toEqual(['', '']);
		const [x, used] = plotColumns(memory);
		expect(x).toEqual([
			Date.UTC(2026, 10, 12, 8, 58) / 1000,
			Date.UTC(2026, 10, 12, 8, 59, 15) / 1000
		]);
		expect(used).toEqual([1024, null]);
	});
});
