/**
 * Every way a payment can be refused, said as a sentence a person understands: the API's codes
 * (`/api/payments/verify`, `/api/payments/create`) and the wallets' own (EIP-1193 4001 "user
 * rejected", 4902 "unknown chain"). The server decides; this only words its answer.
 */
import { ApiError } from '$lib/api';

const SENTENCES: Record<string, string> = {
	underpaid:
		'This transaction sent less USDT than the payment asks for. Send a new transaction for the exact amount.',
	tx_already_used:
		'This transaction has already paid for something else. Each transaction can pay for one thing only.',
	sender_not_payer_wallet:
		'This transaction was sent from a wallet that is not yours. Pay from a wallet you have verified on your account page.',
	no_transfer_to_platform:
		'This transaction does not send USDT to the platform wallet (another token, or another address). It cannot pay for this.',
	wrong_network: 'This transaction is on another network than the payment.',
	tx_failed:
		'The transaction failed on the chain, so no USDT moved. Check your USDT balance and gas, then try again.',
	malformed_tx_hash: 'That is not a transaction hash of this network.',
	already_confirmed: 'This payment is confirmed already.',
	network_not_configured: 'This platform does not accept payments on that network.',
	unavailable:
		'The chain cannot be read right now. Your transaction is safe: check again in a moment.',
	network_error: 'The server cannot be reached. Your transaction is safe: check again in a moment.',
	payment_already_awaited: 'A payment for this is already waiting: finish or check that one.',
	not_found: 'This payment does not exist (or is not yours).'
};

/** The EIP-1193 codes a wallet answers with. */
const WALLET_SENTENCES: Record<number, string> = {
	4001: 'You declined in your wallet. Nothing was sent.',
	4100: 'Your wallet did not allow this site to send from that account. Connect it, then try again.',
	4902: 'Your wallet does not know the chain payments are made on. Add that network in your wallet, then try again.'
};

function walletCode(error: unknown): number | undefined {
	if (typeof error === 'object' && error !== null && 'code' in error) {
		const code = (error as { code: unknown }).code;
		return typeof code === 'number' ? code : undefined;
	}
	return undefined;
}

/** The sentence for any error a payment step can throw. */
export function paymentErrorSentence(error: unknown): string {
	if (error instanceof ApiError) {
		const sentence = SENTENCES[error.code];
		if (sentence) return sentence;
		if (error.code === 'invalid_field' && error.field === 'tx_hash') {
			return SENTENCES.malformed_tx_hash as string;
		}
		return error.message;
	}
	const code = walletCode(error);
	if (code !== undefined && WALLET_SENTENCES[code]) {
		return WALLET_SENTENCES[code] as string;
	}
	if (error instanceof Error && error.message) {
		return error.message;
	}
	return 'The payment did not go through.';
}
