import { describe, expect, it } from 'vitest';
import { ApiError } from '$lib/api';
import { paymentErrorSentence } from './errors';

describe('paymentErrorSentence', () => {
	it('words every refusal of the verify route as a sentence, not a code', () => {
		for (const code of [
			'underpaid',
			'tx_already_used',
			'sender_not_payer_wallet',
			'no_transfer_to_platform',
			'wrong_network',
			'tx_failed'
		]) {
			const sentence = paymentErrorSentence(new ApiError(422, code, `raw ${code}`));
			expect(sentence).not.toContain(code);
			expect(sentence).toMatch(/^[A-Z].*\.$/);
		}
		expect(paymentErrorSentence(new ApiError(422, 'underpaid', 'x'))).toMatch(/less USDT/);
		expect(paymentErrorSentence(new ApiError(422, 'sender_not_payer_wallet', 'x'))).toMatch(
			/not yours/
		);
	});

	it('words a wallet refusal by its EIP-1193 code', () => {
		expect(paymentErrorSentence({ code: 4001, message: 'User rejected' })).toMatch(/declined/);
		expect(paymentErrorSentence({ code: 4902, message: 'Unrecognized chain' })).toMatch(
			/does not know the chain/
		);
	});

	it('keeps the server message of a code it has no sentence for', () => {
		expect(paymentErrorSentence(new ApiError(409, 'something_new', 'The server says so.'))).toBe(
			'The server says so.'
		);
	});
});
