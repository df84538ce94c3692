/**
 * Browser wallets: MetaMask and any EIP-1193 provider (`window.ethereum`), TronLink
 * (`window.tronLink` / `window.tronWeb`). The server issues the message (EIP-4361 for Ethereum)
 * and checks the signature; the page only asks the wallet to sign exactly that text.
 */
import type { Network } from '$lib/api';

export interface Eip1193Provider {
	request(args: { method: string; params?: unknown[] }): Promise<unknown>;
}

export interface TronWebLike {
	defaultAddress?: { base58?: string | false };
	trx: { signMessageV2(message: string): Promise<string> };
}

export interface TronLinkLike {
	request?(args: { method: string }): Promise<unknown>;
	tronWeb?: TronWebLike;
}

interface WalletWindow {
	ethereum?: Eip1193Provider;
	tronLink?: TronLinkLike;
	tronWeb?: TronWebLike;
}

function walletWindow(): WalletWindow {
	return window as unknown as WalletWindow;
}

export function ethereumProvider(): Eip1193Provider | undefined {
	const provider = walletWindow().ethereum;
	return provider && typeof provider.request === 'function' ? provider : undefined;
}

export function hasTronLink(): boolean {
	const w = walletWindow();
	return Boolean(w.tronLink || w.tronWeb);
}

/** A connected wallet: its address and a way to sign a text message with it. */
export interface BrowserWallet {
	network: Network;
	address: string;
	sign(message: string): Promise<string>;
}

function utf8Hex(text: string): string {
	const bytes = new TextEncoder().encode(text);
	return '0x' + Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
}

/** `eth_requestAccounts`, then `personal_sign` of the message (hex-encoded UTF-8, as MetaMask expects). */
export async function connectEthereum(): Promise<BrowserWallet> {
	const provider = ethereumProvider();
	if (!provider) {
		throw new Error('No Ethereum wallet (MetaMask) in this browser.');
	}
	const accounts = await provider.request({ method: 'eth_requestAccounts' });
	const address = Array.isArray(accounts) ? accounts[0] : undefined;
	if (typeof address !== 'string') {
		throw new Error('The wallet shared no account.');
	}
	return {
		network: 'ethereum',
		address,
		async sign(message) {
			const signature = await provider.request({
				method: 'personal_sign',
				params: [utf8Hex(message), address]
			});
			if (typeof signature !== 'string') {
				throw new Error('The wallet returned no signature.');
			}
			return signature;
		}
	};
}

/** TronLink: ask for access, then `tronWeb.trx.signMessageV2` of the message. */
export async function connectTron(): Promise<BrowserWallet> {
	const w = walletWindow();
	if (w.tronLink?.request) {
		await w.tronLink.request({ method: 'tron_requestAccounts' });
	}
	const tronWeb = w.tronLink?.tronWeb ?? w.tronWeb;
	const address = tronWeb?.defaultAddress?.base58;
	if (!tronWeb || typeof address !== 'string' || !address) {
		throw new Error('TronLink is locked or shared no account.');
	}
	return {
		network: 'tron',
		address,
		sign: (message) => tronWeb.trx.signMessageV2(message)
	};
}
