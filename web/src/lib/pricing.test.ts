import { describe, expect, it } from 'vitest';
import { headlinePrice, limitLines, pricingLines } from './pricing';

describe('pricing in words', () => {
	it('shows the server amounts as they are, trimmed of zeros', () => {
		expect(headlinePrice({ type: 'monthly', price_per_month: '5.000000' })).toBe('$5 / month');
		expect(headlinePrice({ type: 'monthly', price_per_month: '0.000000' })).toBe('Free');
		const ppr = {
			type: 'pay_per_request' as const,
			price_per_request: '0.010000',
			price_per_1k_input_tokens: '0.000100',
			price_per_1k_output_tokens: '0.000200'
		};
		expect(pricingLines(ppr)).toContain('$0.01 per request');
		expect(pricingLines(ppr)).toContain('$0.0002 per 1,000 output tokens');
	});

	it('lists only the limits that are set', () => {
		expect(limitLines({ requests_per_minute: 60, requests_per_day: null })).toEqual([
			'60 requests a minute'
		]);
		expect(limitLines({})).toEqual([]);
	});
});
