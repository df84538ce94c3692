import { describe, expect, it } from 'vitest';
import { erc20TransferData } from './wallet';

describe('erc20TransferData', () => {
	it('encodes transfer(to, amount) as the selector and two 32-byte words', () => {
		const data = erc20TransferData('0x8F0483125FcB9aaAEFA9209D8E9d7b9C8B9Fb90F', 10_500_000n);
		expect(data).toBe(
			'0xa9059cbb' +
				'0000000000000000000000008f0483125fcb9aaaefa9209d8e9d7b9c8b9fb90f' +
				'0000000000000000000000000000000000000000000000000000000000a037a0'
		);
	});

	it('refuses an address that is not one and an amount that is not positive', () => {
		expect(() => erc20TransferData('T9yD14Nj9j7xAB4dbGeiX9h8unkKHxuWwb', 1n)).toThrow();
		expect(() => erc20TransferData('0x8F0483125FcB9aaAEFA9209D8E9d7b9C8B9Fb90F', 0n)).toThrow();
	});
});
