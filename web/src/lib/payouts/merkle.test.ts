import { describe, expect, it } from 'vitest';
import { fromHex, leafText, rootFromProof, verifyProof } from './merkle';

// Three leaves of one close; the hashes were computed with Python's hashlib from the rules of
// domain/src/merkle.rs (leaf 0x00 ‖ text, node 0x01 ‖ left ‖ right, the odd leaf carried up).
const leaves = [
	{
		payee: 'user-0',
		wallet: `ethereum:0x${'0'.repeat(40)}`,
		amount: '45.000000',
		month: '2026-11'
	},
	{
		payee: 'user-1',
		wallet: `ethereum:0x${'0'.repeat(39)}1`,
		amount: '12.500000',
		month: '2026-11'
	},
	{ payee: 'user-2', wallet: 'tron:TXYZ', amount: '3.000001', month: '2026-11' }
];
const ROOT = '6d8d712c2c445d09ad43b31b7e65bea057c1e1b85f5dda41438b935743cf13fa';
const H0 = 'ad277fe82e7c819dcddba2653a01c3c9004f35e01a6614f86f66ad1ccdabd649';
const H1 = '75fd052a90f80594fcd51e0736b61d130319c033883cbc55e085e19b81760866';
const H2 = '595afcae038c2bb540ebd78fec725f761c4c4d74c49df25a71adf89c5d2068cc';
const N01 = '3fc0ad77cdbc631f8b100c3ce1dbf8d8e65f90f024770a3b24c96eac8b8f536a';

const proofs = [
	[
		{ sibling: H1, left: false },
		{ sibling: H2, left: false }
	],
	[
		{ sibling: H0, left: true },
		{ sibling: H2, left: false }
	],
	[{ sibling: N01, left: true }]
];

describe('payout receipt proofs', () => {
	it('joins a leaf as the server does', () => {
		expect(leafText(leaves[2]!)).toBe('user-2|tron:TXYZ|3.000001|2026-11');
	});

	it('every leaf with its proof leads to the published root', async () => {
		for (const [i, leaf] of leaves.entries()) {
			expect(await rootFromProof(leaf, proofs[i]!)).toBe(ROOT);
			expect(await verifyProof(leaf, proofs[i]!, ROOT.toUpperCase())).toBe(true);
		}
	});

	it('a changed amount, payee or side does not verify', async () => {
		const leaf = leaves[0]!;
		expect(await verifyProof({ ...leaf, amount: '45.000001' }, proofs[0]!, ROOT)).toBe(false);
		expect(await verifyProof({ ...leaf, payee: 'user-9' }, proofs[0]!, ROOT)).toBe(false);
		const flipped = proofs[0]!.map((s) => ({ ...s, left: !s.left }));
		expect(await verifyProof(leaf, flipped, ROOT)).toBe(false);
	});

	it('a single leaf is its own root; a malformed sibling never verifies', async () => {
		expect(await verifyProof(leaves[0]!, [], H0)).toBe(true);
		expect(await verifyProof(leaves[0]!, [{ sibling: 'zz', left: false }], ROOT)).toBe(false);
		expect(fromHex('ab')).toBeNull();
	});
});
