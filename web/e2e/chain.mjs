// A real local Ethereum chain for the browser journeys that pay: ganache with the test ERC-20
// ("USDT", 6 decimals) from fixtures/chain/chain.mjs, and a MetaMask-shaped provider in the
// page whose transactions a real ethers.js wallet in Node signs and sends to that chain.
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { repo } from './support.mjs';

const CHAIN_DIR = join(repo, 'fixtures', 'chain');
const START_TIMEOUT_MS = 60_000;
/** Set by hand so ethers never estimates gas (a failing transfer is still sent and mined). */
const TRANSFER_GAS_LIMIT = 100_000n;
const RECEIPT_TIMEOUT_MS = 30_000;
const RECEIPT_POLL_MS = 50;

/** Why the paying journeys cannot run here, or null. */
export function chainSkipReason() {
	if (existsSync(join(CHAIN_DIR, 'node_modules', 'ganache'))) return null;
	const reason = 'fixtures/chain has no node_modules (npm ci --prefix fixtures/chain)';
	if (process.env.AIFORGE_REQUIRE_SERVICES === '1') {
		throw new Error(`the local chain is required (AIFORGE_REQUIRE_SERVICES=1): ${reason}`);
	}
	process.stderr.write(`SKIPPED (chain): ${reason}\n`);
	return reason;
}

const { ethers } = createRequire(join(CHAIN_DIR, 'package.json'))('ethers');
export { ethers };

/** `amount` ("10.5") in USDT base units, with integers only. */
export function usdt(amount) {
	return ethers.parseUnits(amount, 6);
}

/**
 * Starts ganache with the token deployed and the payer funded. Answers chain.mjs's line
 * (`rpc_url`, `chain_id`, `token`, `wrong_token`, `platform`, `payer_key`, `other_key`, …) and
 * `mine`, `wallet`, `transfer`, `stop`.
 */
export async function startChain() {
	const child = spawn('node', [join(CHAIN_DIR, 'chain.mjs')], {
		stdio: ['pipe', 'pipe', 'inherit']
	});
	const info = await new Promise((done, fail) => {
		const timer = setTimeout(() => fail(new Error('the chain did not start')), START_TIMEOUT_MS);
		let seen = '';
		child.stdout.on('data', (chunk) => {
			seen += chunk;
			const newline = seen.indexOf('\n');
			if (newline >= 0) {
				clearTimeout(timer);
				done(JSON.parse(seen.slice(0, newline)));
			}
		});
		child.once('exit', (code) => fail(new Error(`chain.mjs exited with ${code}`)));
	});
	// No response cache: two transactions of one account in a row must each read its nonce.
	const provider = new ethers.JsonRpcProvider(info.rpc_url, info.chain_id, {
		staticNetwork: true,
		pollingInterval: 50,
		cacheTimeout: -1
	});
	const rpc = (method, params = []) => provider.send(method, params);

	async function mined(hash) {
		const deadline = Date.now() + RECEIPT_TIMEOUT_MS;
		for (;;) {
			const receipt = await rpc('eth_getTransactionReceipt', [hash]);
			if (receipt?.blockNumber) return receipt;
			if (Date.now() > deadline) throw new Error(`no receipt for ${hash}`);
			await new Promise((r) => setTimeout(r, RECEIPT_POLL_MS));
		}
	}

	const erc20 = new ethers.Interface([
		'function transfer(address to, uint256 value) returns (bool)'
	]);
	return {
		...info,
		provider,
		/** Mines `blocks` empty blocks: each adds one confirmation. */
		async mine(blocks = 1) {
			for (let i = 0; i < blocks; i += 1) await rpc('evm_mine');
		},
		wallet(key) {
			return new ethers.Wallet(key, provider);
		},
		/** Sends a real transaction and waits until it is in a block; answers its hash. */
		async send(wallet, { to, data = '0x', value = 0n }) {
			const tx = await wallet.sendTransaction({ to, data, value, gasLimit: TRANSFER_GAS_LIMIT });
			await mined(tx.hash);
			return tx.hash;
		},
		/** A USDT (or `token`) transfer of `amount` base units from `key`'s account. */
		async transfer(key, to, amount, token = info.token) {
			return this.send(this.wallet(key), {
				to: token,
				data: erc20.encodeFunctionData('transfer', [to, amount])
			});
		},
		/** A new account with 1 ETH for gas and `usdtAmount` base units of USDT from the payer. */
		async fundedWallet(usdtAmount) {
			const wallet = ethers.Wallet.createRandom().connect(provider);
			await this.send(this.wallet(info.payer_key), {
				to: wallet.address,
				value: ethers.parseEther('1')
			});
			await this.transfer(info.payer_key, wallet.address, usdtAmount);
			return wallet;
		},
		async balance(address, token = info.token) {
			const data = new ethers.Interface([
				'function balanceOf(address) view returns (uint256)'
			]).encodeFunctionData('balanceOf', [address]);
			return BigInt(await rpc('eth_call', [{ to: token, data }, 'latest']));
		},
		/** The settings that make `aiforge serve` take payments on this chain. */
		serverEnv() {
			return {
				AIFORGE_ETH_RPC_URL: info.rpc_url,
				AIFORGE_ETH_USDT_CONTRACT: info.token,
				AIFORGE_ETH_PLATFORM_WALLET: info.platform,
				AIFORGE_CHAIN_ID: String(info.chain_id),
				AIFORGE_ETH_CONFIRMATIONS: '3'
			};
		},
		async stop() {
			provider.destroy();
			const exited = new Promise((done) => child.once('exit', done));
			child.stdin.end();
			child.kill('SIGTERM');
			await exited;
		}
	};
}

/**
 * window.ethereum as MetaMask shows it, answered in Node: `personal_sign` by the selected
 * account's key, `wallet_switchEthereumChain` (refused with 4902 for another chain, as MetaMask
 * does for one it does not know), `eth_sendTransaction` signed by that key and really sent to
 * the chain. `select(wallet)` changes the selected account, as a person does in MetaMask.
 */
export async function injectPayingEthereum(context, chain, wallet) {
	let selected = wallet;
	const sent = [];
	await context.exposeFunction('__aiforgeTestEthereum', async (method, params) => {
		switch (method) {
			case 'eth_requestAccounts':
			case 'eth_accounts':
				return [selected.address];
			case 'eth_chainId':
				return '0x' + chain.chain_id.toString(16);
			case 'wallet_switchEthereumChain':
				if (Number(params[0].chainId) !== chain.chain_id) {
					return { error: { code: 4902, message: 'Unrecognized chain ID' } };
				}
				return null;
			case 'personal_sign':
				return selected.signMessage(ethers.getBytes(params[0]));
			case 'eth_sendTransaction': {
				const [tx] = params;
				if (tx.from.toLowerCase() !== selected.address.toLowerCase()) {
					return { error: { code: 4100, message: `not the selected account: ${tx.from}` } };
				}
				const hash = await chain.send(selected, {
					to: tx.to,
					data: tx.data,
					value: BigInt(tx.value ?? 0)
				});
				sent.push({ ...tx, hash });
				return hash;
			}
			default:
				return { error: { code: 4200, message: `unsupported ${method}` } };
		}
	});
	await context.addInitScript(() => {
		window.ethereum = {
			isMetaMask: true,
			async request({ method, params }) {
				const answer = await window.__aiforgeTestEthereum(method, params ?? []);
				if (answer && typeof answer === 'object' && 'error' in answer) {
					throw Object.assign(new Error(answer.error.message), { code: answer.error.code });
				}
				return answer;
			}
		};
	});
	return {
		sent,
		select(next) {
			selected = next.connect ? next.connect(chain.provider) : next;
		}
	};
}
