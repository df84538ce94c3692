/**
 * The admin's payment filters kept in the page's URL (`/admin/payments?type=…&from=…`), so a
 * filtered list can be reloaded, shared and gone back to. The date inputs hold `YYYY-MM-DD`; the
 * API takes RFC 3339, so a day becomes its start in UTC (`to` is exclusive: the day after).
 */
import type { PaymentFilter } from '$lib/api';

export const PAYMENT_FILTER_FIELDS = ['type', 'state', 'network', 'user_id', 'from', 'to'] as const;
export type PaymentFilterField = (typeof PAYMENT_FILTER_FIELDS)[number];

/** What the form shows: every field a string ('' = any), dates as `YYYY-MM-DD`, and the page. */
export type PaymentFilterForm = Record<PaymentFilterField, string> & { page: number };

export function emptyPaymentFilter(): PaymentFilterForm {
	return { type: '', state: '', network: '', user_id: '', from: '', to: '', page: 1 };
}

/** The form from a URL's query (unknown keys ignored, a bad page is page 1). */
export function paymentFilterFromUrl(params: URLSearchParams): PaymentFilterForm {
	const form = emptyPaymentFilter();
	for (const field of PAYMENT_FILTER_FIELDS) {
		form[field] = (params.get(field) ?? '').trim();
	}
	const page = Number(params.get('page'));
	form.page = Number.isInteger(page) && page >= 1 ? page : 1;
	return form;
}

/** The URL query of a form: only the fields set, page only past the first. */
export function paymentFilterToSearch(form: PaymentFilterForm): string {
	const params = new URLSearchParams();
	for (const field of PAYMENT_FILTER_FIELDS) {
		const value = form[field].trim();
		if (value) {
			params.set(field, value);
		}
	}
	if (form.page > 1) {
		params.set('page', String(form.page));
	}
	const text = params.toString();
	return text ? `?${text}` : '';
}

/** A `YYYY-MM-DD` day as the RFC 3339 start of that day in UTC; anything else is sent as typed. */
export function dayStart(day: string): string {
	return /^\d{4}-\d{2}-\d{2}$/.test(day) ? `${day}T00:00:00Z` : day;
}

/** The day after a `YYYY-MM-DD` (so "to" includes the day chosen), in UTC. */
export function dayAfter(day: string): string {
	if (!/^\d{4}-\d{2}-\d{2}$/.test(day)) {
		return day;
	}
	const date = new Date(`${day}T00:00:00Z`);
	date.setUTCDate(date.getUTCDate() + 1);
	return date.toISOString().replace('.000Z', 'Z');
}

/** The API's filter of a form (the server checks every value and answers 422 otherwise). */
export function paymentFilterToApi(form: PaymentFilterForm, perPage = 50): PaymentFilter {
	return {
		type: form.type || undefined,
		state: form.state || undefined,
		network: form.network || undefined,
		user_id: form.user_id || undefined,
		from: form.from ? dayStart(form.from) : undefined,
		to: form.to ? dayAfter(form.to) : undefined,
		page: form.page,
		per_page: perPage
	};
}
