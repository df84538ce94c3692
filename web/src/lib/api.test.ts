import { afterEach, describe, expect, it, vi } from 'vitest';
import { api, ApiError, CSRF_HEADER, query } from './api';

function answer(status: number, body: unknown) {
	return vi.fn(async () => new Response(JSON.stringify(body), { status }));
}

describe('the API client', () => {
	afterEach(() => {
		vi.unstubAllGlobals();
	});

	it('sends the CSRF header with the same-origin cookie, and an idempotency key on writes', async () => {
		const fetch = answer(200, { signed_out: true });
		vi.stubGlobal('fetch', fetch);
		await api.logout();
		const [path, init] = fetch.mock.calls[0] as unknown as [string, RequestInit];
		const headers = init.headers as Record<string, string>;
		expect(path).toBe('/api/auth/logout');
		expect(init.method).toBe('POST');
		expect(init.credentials).toBe('same-origin');
		expect(headers[CSRF_HEADER]).toBe('1');
		expect(headers['Idempotency-Key']).toMatch(/^[0-9a-f-]{36}$/);
	});

	it('turns the platform error shape into an ApiError with its code and field', async () => {
		vi.stubGlobal(
			'fetch',
			answer(422, { error: { code: 'invalid_field', message: 'bad email', field: 'email' } })
		);
		const error = await api.register('x', 'y', 'z').catch((e: unknown) => e);
		expect(error).toBeInstanceOf(ApiError);
		expect(error).toMatchObject({ status: 422, code: 'invalid_field', field: 'email' });
	});

	it('keeps money as the server wrote it', async () => {
		vi.stubGlobal(
			'fetch',
			answer(200, {
				plans: [
					{
						id: 'basic',
						name: 'Basic',
						price_per_month: '10.000000',
						requests_per_month: 1,
						tokens_per_month: 1
					}
				]
			})
		);
		const { plans } = await api.plans();
		expect(plans[0]?.price_per_month).toBe('10.000000');
	});

	it('reads a pending verification (202) with the confirmations the server counts', async () => {
		vi.stubGlobal(
			'fetch',
			answer(202, {
				payment: { payment_id: 'p1', amount: '10.000000', status: 'pending' },
				verification: { status: 'pending', confirmations: 1, required_confirmations: 3 }
			})
		);
		const answered = await api.verifyPayment('p1', '0xabc');
		expect(answered.verification).toEqual({
			status: 'pending',
			confirmations: 1,
			required_confirmations: 3
		});
		expect(answered.payment.amount).toBe('10.000000');
	});

	it('words a refused verification by its code', async () => {
		vi.stubGlobal('fetch', answer(422, { error: { code: 'underpaid', message: 'paid 9 of 10' } }));
		const error = await api.verifyPayment('p1', '0xabc').catch((e: unknown) => e);
		expect(error).toMatchObject({ status: 422, code: 'underpaid' });
	});
});

describe('query', () => {
	it('keeps only the fields that are set, encoded', () => {
		expect(query({ q: 'tiny model', kind: '', min_price: '0.5', page: 1, tags: undefined })).toBe(
			'?q=tiny+model&min_price=0.5&page=1'
		);
		expect(query({})).toBe('');
	});
});
