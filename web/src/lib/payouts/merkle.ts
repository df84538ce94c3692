/**
 * Checks a payout's inclusion proof in the browser, with the same hashing as the server
 * (domain/src/merkle.rs), so the payee need not trust the page's server for the answer:
 * leaf = SHA-256(0x00 ‖ "payee|network:address|amount|month"), node = SHA-256(0x01 ‖ left ‖ right),
 * each step's sibling on the left or the right of the running hash. Web Crypto's SHA-256.
 */
import type { ProofStep, ReceiptLeaf } from '$lib/api';

/** The text a leaf hashes, exactly as the server joins it. */
export function leafText(leaf: ReceiptLeaf): string {
	return `${leaf.payee}|${leaf.wallet}|${leaf.amount}|${leaf.month}`;
}

export function toHex(bytes: Uint8Array): string {
	return Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
}

/** 32 bytes from 64 hex digits; null for anything else (a malformed proof never verifies). */
export function fromHex(text: string): Uint8Array | null {
	if (!/^[0-9a-fA-F]{64}$/.test(text)) {
		return null;
	}
	const out = new Uint8Array(32);
	for (let i = 0; i < 32; i += 1) {
		out[i] = parseInt(text.slice(2 * i, 2 * i + 2), 16);
	}
	return out;
}

async function sha256(prefix: number, ...parts: Uint8Array[]): Promise<Uint8Array> {
	const length = 1 + parts.reduce((sum, p) => sum + p.length, 0);
	const input = new Uint8Array(length);
	input[0] = prefix;
	let at = 1;
	for (const part of parts) {
		input.set(part, at);
		at += part.length;
	}
	return new Uint8Array(await crypto.subtle.digest('SHA-256', input));
}

export function leafHash(leaf: ReceiptLeaf): Promise<Uint8Array> {
	return sha256(0, new TextEncoder().encode(leafText(leaf)));
}

/** The root the leaf and its proof lead to (hex), or null when a step is malformed. */
export async function rootFromProof(leaf: ReceiptLeaf, proof: ProofStep[]): Promise<string | null> {
	let running = await leafHash(leaf);
	for (const step of proof) {
		const sibling = fromHex(step.sibling);
		if (!sibling) {
			return null;
		}
		running = step.left ? await sha256(1, sibling, running) : await sha256(1, running, sibling);
	}
	return toHex(running);
}

/** Whether the leaf with its proof leads to `root` (hex, compared without regard to case). */
export async function verifyProof(
	leaf: ReceiptLeaf,
	proof: ProofStep[],
	root: string
): Promise<boolean> {
	const computed = await rootFromProof(leaf, proof);
	return computed !== null && computed === root.toLowerCase();
}
