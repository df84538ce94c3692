import { describe, expect, it } from 'vitest';
import { explorerLink, microsToUsdt, payoutStateLabel } from './explorer';

describe('explorer links', () => {
	it('prefers the server’s link, else builds the network’s', () => {
		expect(explorerLink('ethereum', '0xab', 'https://explorer.example/tx/0xab')).toBe(
			'https://explorer.example/tx/0xab'
		);
		expect(explorerLink('ethereum', '0xab')).toBe('https://etherscan.io/tx/0xab');
		expect(explorerLink('tron', '0xcd')).toBe('https://tronscan.org/#/transaction/cd');
		expect(explorerLink('ethereum', null)).toBeNull();
	});

	it('names states and shows micros exactly', () => {
		expect(payoutStateLabel('awaiting_approval')).toBe('Awaiting approval');
		expect(microsToUsdt(90_000_000)).toBe('90.000000');
		expect(microsToUsdt(-1)).toBe('-0.000001');
		expect(microsToUsdt('9007199254740993')).toBe('9007199254.740993');
	});
});
