// Shared by the browser journeys: the real `aiforge` binary on a free port with a fresh data
// dir, Debian's Chromium through playwright-core, real wallet keys (ethers.js, tronweb from
// fixtures/wallets) answering an injected EIP-1193 provider and a TronLink-shaped one.
import { execFile, spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

export const repo = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
export const CHROMIUM = process.env.AIFORGE_CHROMIUM ?? '/usr/bin/chromium';
/** Without the background-networking flags Chromium keeps dialling out, which this network refuses. */
const CHROMIUM_ARGS = [
	'--headless',
	'--no-sandbox',
	'--disable-gpu',
	'--disable-quic',
	'--no-first-run',
	'--disable-background-networking',
	'--disable-component-update',
	'--disable-sync'
];
const START_TIMEOUT_MS = 60_000;

export const artifacts = resolve(
	process.env.AIFORGE_WEB_ARTIFACTS ?? join(repo, 'target', 'web-artifacts')
);

/** Why the journeys cannot run here, or null. With AIFORGE_REQUIRE_SERVICES=1 a reason fails. */
export function skipReason() {
	let reason = null;
	if (!existsSync(CHROMIUM)) {
		reason = `${CHROMIUM} not found (apt-get install -y chromium)`;
	} else if (!existsSync(join(repo, 'web', 'build', 'index.html'))) {
		reason = 'web/build is not built (cd web && npm run build)';
	}
	if (reason && process.env.AIFORGE_REQUIRE_SERVICES === '1') {
		throw new Error(`Chromium journeys required (AIFORGE_REQUIRE_SERVICES=1): ${reason}`);
	}
	if (reason) {
		process.stderr.write(`SKIPPED (Chromium): ${reason}\n`);
	}
	return reason;
}

export function aiforgeBinary() {
	const target = process.env.CARGO_TARGET_DIR ?? join(repo, 'target');
	const binary = process.env.AIFORGE_BIN ?? join(target, 'debug', 'aiforge');
	if (!existsSync(binary)) {
		throw new Error(
			`${binary} not found: cargo build -p aiforge-api --bin aiforge (or set AIFORGE_BIN)`
		);
	}
	return binary;
}

async function freePort() {
	return new Promise((done, fail) => {
		const server = createServer();
		server.once('error', fail);
		server.listen(0, '127.0.0.1', () => {
			const { port } = server.address();
			server.close(() => done(port));
		});
	});
}

/** A local model can take minutes to fetch (once, into the model cache) and load. */
const START_WITH_MODEL_TIMEOUT_MS = 600_000;

/**
 * Starts the real server. The public URL must be the origin the browser sees (sign-in messages
 * name its host), so the port is chosen first and given to both. `localNode` is
 * AIFORGE_LOCAL_NODE (`off` unless given: `smollm2`, `upstream:<url>#<model>`); `env` adds
 * settings.
 */
export async function startServer({ localNode = 'off', env: extra = {} } = {}) {
	const port = await freePort();
	const base = `http://127.0.0.1:${port}`;
	const dataDir = mkdtempSync(join(tmpdir(), 'aiforge-web-e2e-'));
	const env = { ...process.env };
	delete env.AIFORGE_DATABASE_URL;
	delete env.AIFORGE_NATS_URL;
	Object.assign(env, {
		AIFORGE_LOCAL_NODE: localNode,
		AIFORGE_WEB_DIR: join(repo, 'web', 'build'),
		AIFORGE_PUBLIC_URL: base,
		RUST_LOG: 'warn',
		...extra
	});
	const startTimeoutMs = localNode === 'off' ? START_TIMEOUT_MS : START_WITH_MODEL_TIMEOUT_MS;
	const child = spawn(
		aiforgeBinary(),
		['--data-dir', dataDir, 'serve', '--bind', `127.0.0.1:${port}`],
		{
			env,
			stdio: ['ignore', 'pipe', 'inherit']
		}
	);
	await new Promise((done, fail) => {
		const timer = setTimeout(
			() => fail(new Error('aiforge did not start in time')),
			startTimeoutMs
		);
		let seen = '';
		child.stdout.on('data', (chunk) => {
			seen += chunk;
			if (seen.includes('aiforge listening on ')) {
				clearTimeout(timer);
				done();
			}
		});
		child.once('exit', (code) => fail(new Error(`aiforge exited with ${code} before listening`)));
	});
	return {
		base,
		dataDir,
		url: (path) => base + path,
		/** The event log as `aiforge events export` writes it (JSON lines), parsed. */
		async events({ from, to } = {}) {
			const args = ['--data-dir', dataDir, 'events', 'export'];
			if (from !== undefined) args.push('--from', String(from));
			if (to !== undefined) args.push('--to', String(to));
			const stdout = await new Promise((done, fail) =>
				execFile(aiforgeBinary(), args, { env, maxBuffer: 256 * 1024 * 1024 }, (error, out, err) =>
					error ? fail(new Error(`${error.message}\n${err}`)) : done(out)
				)
			);
			return stdout
				.split('\n')
				.filter((line) => line.trim())
				.map((line) => JSON.parse(line));
		},
		async stop() {
			const exited = new Promise((done) => child.once('exit', done));
			child.kill('SIGTERM');
			await exited;
			rmSync(dataDir, { recursive: true, force: true });
		}
	};
}

/**
 * The workspace's `aiforge-mock-openai` (next to the aiforge binary): an OpenAI-compatible
 * engine that answers every completion with `reply`, streamed word by word.
 */
export async function startMockOpenAi({ reply, chunkDelayMs = 0 }) {
	const binary = join(dirname(aiforgeBinary()), 'aiforge-mock-openai');
	if (!existsSync(binary)) {
		throw new Error(
			`${binary} not found: cargo build -p aiforge-inference --bin aiforge-mock-openai`
		);
	}
	const child = spawn(
		binary,
		['--port', '0', '--reply', reply, '--chunk-delay-ms', String(chunkDelayMs)],
		{ stdio: ['ignore', 'pipe', 'inherit'] }
	);
	const url = await new Promise((done, fail) => {
		const timer = setTimeout(() => fail(new Error('the mock did not start')), START_TIMEOUT_MS);
		let seen = '';
		child.stdout.on('data', (chunk) => {
			seen += chunk;
			const found = /listening on (http:\/\/\S+)/.exec(seen);
			if (found) {
				clearTimeout(timer);
				done(found[1]);
			}
		});
		child.once('exit', (code) => fail(new Error(`the mock exited with ${code}`)));
	});
	return {
		url,
		async stop() {
			const exited = new Promise((done) => child.once('exit', done));
			child.kill('SIGTERM');
			await exited;
		}
	};
}

/** Chromium with a fresh profile (playwright gives every launch its own temporary user-data-dir). */
export async function launchBrowser() {
	return chromium.launch({ executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS });
}

const wallets = createRequire(join(repo, 'fixtures', 'wallets', 'package.json'));
export const { Wallet, getBytes } = wallets('ethers');
const { TronWeb, Trx } = wallets('tronweb');

export function tronWallet() {
	const key = Wallet.createRandom().privateKey.slice(2);
	return {
		address: TronWeb.address.fromPrivateKey(key),
		sign: (message) => Trx.signMessageV2(message, key)
	};
}

/** window.ethereum whose personal_sign is answered by a real ethers.js key in Node. */
export async function injectEthereum(context, wallet) {
	await context.exposeFunction('__aiforgeTestEthSign', (hex, address) => {
		if (address.toLowerCase() !== wallet.address.toLowerCase()) {
			throw new Error(`asked to sign for ${address}`);
		}
		return wallet.signMessage(getBytes(hex));
	});
	await context.addInitScript((address) => {
		window.ethereum = {
			isMetaMask: true,
			async request({ method, params }) {
				if (method === 'eth_requestAccounts' || method === 'eth_accounts') return [address];
				if (method === 'personal_sign') return window.__aiforgeTestEthSign(params[0], params[1]);
				throw Object.assign(new Error(`unsupported ${method}`), { code: 4200 });
			}
		};
	}, wallet.address);
}

/** window.tronLink / window.tronWeb whose signMessageV2 is answered by tronweb in Node. */
export async function injectTronLink(context, wallet) {
	await context.exposeFunction('__aiforgeTestTronSign', (message) => wallet.sign(message));
	await context.addInitScript((address) => {
		const tronWeb = {
			defaultAddress: { base58: address, hex: '' },
			trx: { signMessageV2: (message) => window.__aiforgeTestTronSign(message) }
		};
		window.tronWeb = tronWeb;
		window.tronLink = { ready: true, tronWeb, request: async () => ({ code: 200 }) };
	}, wallet.address);
}

/**
 * Collects what must never happen on a page: script errors and Content-Security-Policy
 * violations (the console reports each refused script, style or connection).
 */
export function watchProblems(page) {
	const problems = [];
	page.on('pageerror', (error) => problems.push(`page error: ${error.message}`));
	page.on('console', (message) => {
		const text = message.text();
		if (message.type() === 'error' && /Content Security Policy|Refused to/i.test(text)) {
			problems.push(`CSP: ${text}`);
		}
	});
	return problems;
}

export function artifactPath(name) {
	mkdirSync(artifacts, { recursive: true });
	return join(artifacts, name);
}

export const SESSION_COOKIE = 'aiforge_session';

export async function sessionCookie(context, base) {
	const cookies = await context.cookies(base);
	return cookies.find((c) => c.name === SESSION_COOKIE);
}
