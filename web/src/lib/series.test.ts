import { describe, expect, it } from 'vitest';
import type { Series } from './api';
import { periodLabel, plotColumns, seriesTable } from './series';

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
