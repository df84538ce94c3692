import { describe, expect, it } from 'vitest';
import {
	dayAfter,
	emptyPaymentFilter,
	paymentFilterFromUrl,
	paymentFilterToApi,
	paymentFilterToSearch
} from './paymentFilter';

describe('payment filters in the URL', () => {
	it('round-trips through the query string', () => {
		const form = {
			...emptyPaymentFilter(),
			type: 'api_subscription',
			state: 'confirmed',
			network: 'ethereum',
			user_id: 'u-1',
			from: '2026-11-01',
			to: '2026-11-30',
			page: 3
		};
		const search = paymentFilterToSearch(form);
		expect(search).toBe(
			'?type=api_subscription&state=confirmed&network=ethereum&user_id=u-1&from=2026-11-01&to=2026-11-30&page=3'
		);
		expect(paymentFilterFromUrl(new URLSearchParams(search))).toEqual(form);
	});

	it('leaves out what is not set, and page 1', () => {
		expect(paymentFilterToSearch(emptyPaymentFilter())).toBe('');
		expect(paymentFilterToSearch({ ...emptyPaymentFilter(), network: 'tron' })).toBe(
			'?network=tron'
		);
	});

	it('reads a bad page as the first and ignores unknown keys', () => {
		const form = paymentFilterFromUrl(new URLSearchParams('page=-2&colour=red&state=pending'));
		expect(form).toEqual({ ...emptyPaymentFilter(), state: 'pending' });
		expect(paymentFilterFromUrl(new URLSearchParams('page=abc')).page).toBe(1);
	});

	it('sends days as RFC 3339, the end day included', () => {
		const api = paymentFilterToApi({
			...emptyPaymentFilter(),
			from: '2026-11-01',
			to: '2026-11-30'
		});
		expect(api.from).toBe('2026-11-01T00:00:00Z');
		expect(api.to).toBe('2026-12-01T00:00:00Z');
		expect(api.type).toBeUndefined();
		expect(dayAfter('2026-12-31')).toBe('2027-01-01T00:00:00Z');
	});
});
