import { describe, expect, it } from 'vitest';
import { listingState, timeLeft } from './listing';

const now = Date.parse('2026-12-03T12:00:00Z');

describe('listing state', () => {
	it('counts down days and hours, then hours and minutes', () => {
		expect(timeLeft('2026-12-06T15:30:00Z', now)).toBe('3 d 3 h left');
		expect(timeLeft('2026-12-03T14:45:00Z', now)).toBe('2 h 45 min left');
		expect(timeLeft('2026-12-03T11:00:00Z', now)).toBe('ending now');
	});

	it('names each state of a listing', () => {
		expect(
			listingState({ state: 'grace', listed_until: null, grace_until: '2026-12-05T12:00:00Z' }, now)
		).toBe('Grace · 2 d 0 h left to pay the listing fee');
		expect(listingState({ state: 'delisted', listed_until: null, grace_until: null }, now)).toMatch(
			/^Delisted/
		);
		expect(listingState({ state: 'uploaded', listed_until: null, grace_until: null }, now)).toBe(
			'Not published'
		);
	});
});
