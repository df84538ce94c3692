/**
 * A model's listing state in words, with the time left (a countdown in days and hours). Times
 * are the server's; this only measures the distance to them.
 */
import type { Model } from '$lib/api';

export function timeLeft(until: string, now: number): string {
	const ms = Date.parse(until) - now;
	if (Number.isNaN(ms)) return until;
	if (ms <= 0) return 'ending now';
	const hours = Math.floor(ms / 3_600_000);
	const days = Math.floor(hours / 24);
	if (days >= 1) return `${days} d ${hours % 24} h left`;
	const minutes = Math.floor((ms % 3_600_000) / 60_000);
	return `${hours} h ${minutes} min left`;
}

export function listingState(
	model: Pick<Model, 'state' | 'listed_until' | 'grace_until'>,
	now: number
): string {
	switch (model.state) {
		case 'listed':
			return model.listed_until ? `Listed · ${timeLeft(model.listed_until, now)}` : 'Listed';
		case 'grace':
			return model.grace_until
				? `Grace · ${timeLeft(model.grace_until, now)} to pay the listing fee`
				: 'Grace: pay the listing fee';
		case 'delisted':
			return 'Delisted: pay the listing fee to list it again';
		case 'uploaded':
			return 'Not published';
		default:
			return model.state;
	}
}
