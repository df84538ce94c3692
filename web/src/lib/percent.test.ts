import { describe, expect, it } from 'vitest';
import { checkSplit, hundredths, showHundredths } from './percent';

describe('split percentages', () => {
	it('are exact hundredths', () => {
		expect(hundredths('50')).toBe(5000);
		expect(hundredths('33.33')).toBe(3333);
		expect(hundredths('0.1')).toBe(10);
		expect(hundredths('33.333')).toBeNull();
		expect(hundredths('1e2')).toBeNull();
		expect(hundredths('101')).toBeNull();
		expect(showHundredths(9900)).toBe('99');
		expect(showHundredths(3333)).toBe('33.33');
		expect(showHundredths(10)).toBe('0.1');
	});

	it('take 50/30/20 and 33.33/33.33/33.34, refuse 50/30/19', () => {
		expect(checkSplit(['50', '30', '20'])).toEqual({ ok: true, total: 10_000 });
		expect(checkSplit(['33.33', '33.33', '33.34']).ok).toBe(true);
		const refused = checkSplit(['50', '30', '19']);
		expect(refused.ok).toBe(false);
		expect(refused.ok ? '' : refused.problem).toBe(
			'The shares add up to 99%; they must add up to exactly 100%.'
		);
	});
});
