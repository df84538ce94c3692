import { describe, expect, it } from 'vitest';
import { safeNext } from './session.svelte';

describe('safeNext', () => {
	it('returns to a path of this app', () => {
		expect(safeNext('/plans')).toBe('/plans');
		expect(safeNext('/chat/123?x=1')).toBe('/chat/123?x=1');
	});

	it('never sends a person to another origin', () => {
		expect(safeNext('//evil.example/')).toBe('/account');
		expect(safeNext('/\\evil.example')).toBe('/account');
		expect(safeNext('https://evil.example/')).toBe('/account');
		expect(safeNext('javascript:alert(1)')).toBe('/account');
		expect(safeNext(null)).toBe('/account');
	});
});
