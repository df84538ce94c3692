import { afterEach, describe, expect, it, vi } from 'vitest';
import { api, ApiError, CSRF_HEADER } from './api';

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
});
