/**
 * Browser wallets: MetaMask and any EIP-1193 provider (`window.ethereum`), TronLink
 * (`window.tronLink` / `window.tronWeb`). The server issues the message (EIP-4361 for Ethereum)
 * and checks the signature; the page only asks the wallet to sign exactly that text.
 */
import type { Network, PaymentChain } from '$lib/api';

export interface Eip1193Provider {
	request(args: { method: string; params?: unknown[] }): Promise<unknown>;
}

export interface TronWebLike {
	defaultAddress?: { base58?: string | false };
	trx: {
		signMessageV2(message: string): Promise<string>;
		sign?(transaction: unknown): Promise<unknown>;
		sendRawTransaction?(signed: unknown): Promise<{ result?: boolean; txid?: string }>;
	};
	transactionBuilder?: {
		triggerSmartContract(
			contract: string,
			selector: string,
			options: { feeLimit: number },
			parameters: { type: string; value: string }[],
			issuer: string
		): Promise<{ result?: { result?: boolean }; transaction?: unknown }>;
	};
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

/** The ERC-20 `transfer(address,uint256)` selector: keccak256 of the signature, first 4 bytes. */
const ERC20_TRANSFER_SELECTOR = 'a9059cbb';
/** What a TRC-20 transfer may burn in TRX fees, in sun (100 TRX): TronLink's usual ceiling. */
const TRC20_FEE_LIMIT_SUN = 100_000_000;

function word(hex: string): string {
	return hex.padStart(64, '0');
}

/** The call data of `transfer(to, amount)`: the selector and two 32-byte words. */
export function erc20TransferData(to: string, amount: bigint): string {
	const address = to.toLowerCase().replace(/^0x/, '');
	if (!/^[0-9a-f]{40}$/.test(address)) {
		throw new Error(`${to} is not an Ethereum address`);
	}
	if (amount <= 0n) {
		throw new Error('the amount must be positive');
	}
	return '0x' + ERC20_TRANSFER_SELECTOR + word(address) + word(amount.toString(16));
}

/**
 * Sends `amount` base units of the chain's USDT from the user's wallet to `payTo` and answers
 * the transaction hash. MetaMask (EIP-1193): switch to the configured chain, then
 * `eth_sendTransaction` of the ERC-20 call. TronLink: the TRC-20 `transfer` built, signed and
 * broadcast through tronWeb.
 */
export async function sendUsdt(
	chain: PaymentChain,
	payTo: string,
	amount: bigint
): Promise<string> {
	return chain.network === 'ethereum'
		? sendErc20(chain, payTo, amount)
		: sendTrc20(chain, payTo, amount);
}

async function sendErc20(chain: PaymentChain, payTo: string, amount: bigint): Promise<string> {
	const provider = ethereumProvider();
	if (!provider) {
		throw new Error('No Ethereum wallet (MetaMask) in this browser.');
	}
	const accounts = await provider.request({ method: 'eth_requestAccounts' });
	const from = Array.isArray(accounts) ? accounts[0] : undefined;
	if (typeof from !== 'string') {
		throw new Error('The wallet shared no account.');
	}
	if (chain.chain_id !== null) {
		await provider.request({
			method: 'wallet_switchEthereumChain',
			params: [{ chainId: '0x' + chain.chain_id.toString(16) }]
		});
	}
	const hash = await provider.request({
		method: 'eth_sendTransaction',
		params: [
			{
				from,
				to: chain.usdt_contract,
				value: '0x0',
				data: erc20TransferData(payTo, amount)
			}
		]
	});
	if (typeof hash !== 'string') {
		throw new Error('The wallet returned no transaction hash.');
	}
	return hash;
}

async function sendTrc20(chain: PaymentChain, payTo: string, amount: bigint): Promise<string> {
	const w = walletWindow();
	if (w.tronLink?.request) {
		await w.tronLink.request({ method: 'tron_requestAccounts' });
	}
	const tronWeb = w.tronLink?.tronWeb ?? w.tronWeb;
	const from = tronWeb?.defaultAddress?.base58;
	if (!tronWeb || typeof from !== 'string' || !from) {
		throw new Error('TronLink is locked or shared no account.');
	}
	const builder = tronWeb.transactionBuilder;
	const { sign, sendRawTransaction } = tronWeb.trx;
	if (!builder || !sign || !sendRawTransaction) {
		throw new Error('This TronLink cannot send token transfers.');
	}
	const built = await builder.triggerSmartContract(
		chain.usdt_contract,
		'transfer(address,uint256)',
		{ feeLimit: TRC20_FEE_LIMIT_SUN },
		[
			{ type: 'address', value: payTo },
			{ type: 'uint256', value: amount.toString() }
		],
		from
	);
	if (!built.result?.result || !built.transaction) {
		throw new Error('TronLink could not build the USDT transfer.');
	}
	const signed = await sign.call(tronWeb.trx, built.transaction);
	const sent = await sendRawTransaction.call(tronWeb.trx, signed);
	if (!sent.result || !sent.txid) {
		throw new Error('The Tron network did not accept the transaction.');
	}
	return sent.txid;
}
