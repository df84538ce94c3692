import { describe, expect, it } from 'vitest';
import { showMoney, toBaseUnits } from './money';

describe('showMoney', () => {
	it('drops only trailing zeros of the fraction, as text', () => {
		expect(showMoney('10.000000')).toBe('10');
		expect(showMoney('0.000000')).toBe('0');
		expect(showMoney('100')).toBe('100');
		expect(showMoney('0.500000')).toBe('0.5');
		expect(showMoney('12.345678')).toBe('12.345678');
		expect(showMoney('1000.010000')).toBe('1000.01');
	});

	it('keeps every digit of amounts a float would round', () => {
		expect(showMoney('9007199254740993.000001')).toBe('9007199254740993.000001');
		expect(showMoney('0.100000')).toBe('0.1');
	});

	it('shows anything that is not a plain decimal as it came', () => {
		expect(showMoney('1e3')).toBe('1e3');
		expect(showMoney('')).toBe('');
	});
});

describe('toBaseUnits', () => {
	it('turns the decimal text into the token base units with integers only', () => {
		expect(toBaseUnits('10.000000', 6)).toBe(10_000_000n);
		expect(toBaseUnits('0.1', 6)).toBe(100_000n);
		expect(toBaseUnits('5', 6)).toBe(5_000_000n);
		expect(toBaseUnits('9007199254740993.000001', 6)).toBe(9_007_199_254_740_993_000_001n);
	});

	it('refuses what is not an amount or is finer than the token', () => {
		expect(() => toBaseUnits('-1', 6)).toThrow();
		expect(() => toBaseUnits('1e3', 6)).toThrow();
		expect(() => toBaseUnits('0.0000001', 6)).toThrow();
	});
});
