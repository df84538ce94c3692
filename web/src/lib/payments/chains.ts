/**
 * The networks payments are accepted on, read once per page load (public settings that change
 * only with a server restart).
 */
import { api, type Network, type PaymentChain } from '$lib/api';

let chains: Promise<PaymentChain[]> | null = null;

export function paymentChains(): Promise<PaymentChain[]> {
	chains ??= api
		.paymentNetworks()
		.then((answer) => answer.networks)
		.catch((e: unknown) => {
			chains = null;
			throw e;
		});
	return chains;
}

/** The network a purchase should use by default: Ethereum when it is configured. */
export async function defaultNetwork(): Promise<Network> {
	const configured = await paymentChains();
	return (
		configured.find((c) => c.network === 'ethereum')?.network ??
		configured[0]?.network ??
		'ethereum'
	);
}
