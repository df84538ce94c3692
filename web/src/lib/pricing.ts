/**
 * A service's pricing and limits in words. Prices are the server's strings (showMoney only
 * trims zeros); nothing is computed here.
 */
import type { Pricing, PricingType, RateLimits } from '$lib/api';
import { showMoney } from '$lib/money';

export const PRICING_NAMES: Record<PricingType, string> = {
	monthly: 'Monthly',
	pay_per_request: 'Pay per request',
	hybrid: 'Monthly with included use'
};

const count = new Intl.NumberFormat('en-US');

/** The headline price: "$5 / month", "$0.01 / request", "Free". */
export function headlinePrice(pricing: Pricing): string {
	switch (pricing.type) {
		case 'monthly':
			return /^0*(\.0*)?$/.test(pricing.price_per_month)
				? 'Free'
				: `$${showMoney(pricing.price_per_month)} / month`;
		case 'hybrid':
			return `$${showMoney(pricing.price_per_month)} / month + use`;
		case 'pay_per_request':
			return 'Pay as you go';
	}
}

/** Every line of the pricing, for a service page. */
export function pricingLines(pricing: Pricing): string[] {
	const usage = (p: {
		price_per_request: string;
		price_per_1k_input_tokens: string;
		price_per_1k_output_tokens: string;
	}) => [
		`$${showMoney(p.price_per_request)} per request`,
		`$${showMoney(p.price_per_1k_input_tokens)} per 1,000 input tokens`,
		`$${showMoney(p.price_per_1k_output_tokens)} per 1,000 output tokens`
	];
	switch (pricing.type) {
		case 'monthly':
			return [`$${showMoney(pricing.price_per_month)} a month, unlimited within the limits`];
		case 'pay_per_request':
			return [...usage(pricing), 'Paid from prepaid credit'];
		case 'hybrid':
			return [
				`$${showMoney(pricing.price_per_month)} a month`,
				`${count.format(pricing.included_requests)} requests and ${count.format(pricing.included_tokens)} tokens included`,
				...usage(pricing).map((line) => `then ${line}`)
			];
	}
}

/** The limits that are set, in words ("60 requests a minute"); none: no limit. */
export function limitLines(limits: RateLimits): string[] {
	const lines: string[] = [];
	const add = (value: number | null | undefined, what: string) => {
		if (typeof value === 'number') lines.push(`${count.format(value)} ${what}`);
	};
	add(limits.requests_per_minute, 'requests a minute');
	add(limits.requests_per_hour, 'requests an hour');
	add(limits.requests_per_day, 'requests a day');
	add(limits.requests_per_month, 'requests a month');
	add(limits.tokens_per_month, 'tokens a month');
	return lines;
}

/** Whether subscribing asks for prepaid credit (pay-per-request must have some). */
export function takesCredit(pricing: Pricing): boolean {
	return pricing.type !== 'monthly';
}
