/**
 * Where a payout's transaction is shown to people. The server's `explorer_url` wins (the
 * platform's explorer is a setting there); without it the public explorer of the network.
 */
import type { Network } from '$lib/api';

export function explorerLink(
	network: Network | string,
	txHash: string | null,
	given?: string | null
): string | null {
	if (given) {
		return given;
	}
	if (!txHash) {
		return null;
	}
	if (network === 'ethereum') {
		return `https://etherscan.io/tx/${txHash}`;
	}
	if (network === 'tron') {
		return `https://tronscan.org/#/transaction/${txHash.replace(/^0x/, '')}`;
	}
	return null;
}

/** A payout state in words. */
export function payoutStateLabel(state: string): string {
	const labels: Record<string, string> = {
		awaiting_approval: 'Awaiting approval',
		awaiting_payment: 'Awaiting payment',
		in_progress: 'In progress',
		completed: 'Completed',
		cancelled: 'Cancelled',
		failed: 'Failed'
	};
	return labels[state] ?? state;
}

/** Integer micro-USDT (as a ledger posting gives it) as exact USDT text, without floats. */
export function microsToUsdt(micros: number | string): string {
	const value = BigInt(micros);
	const negative = value < 0n;
	const abs = negative ? -value : value;
	const whole = abs / 1_000_000n;
	const fraction = (abs % 1_000_000n).toString().padStart(6, '0');
	return `${negative ? '-' : ''}${whole}.${fraction}`;
}
