import { describe, expect, it } from 'vitest';
import { MessageTree, ROOT, type TreeMessage } from './tree';

let clock = 0;
function m(id: string, parent_id: string | null): TreeMessage {
	clock += 1;
	return { id, parent_id, created_at: `2026-12-01T00:00:${String(clock).padStart(2, '0')}Z` };
}

/**
 *        u1 ─ a1 ─ u2 ─ a2
 *           ╲ a1b         (regenerated)
 *        u1' ─ a3          (the first message edited: a second root)
 *   and under a1: u2' ─ a4 (the second message edited)
 */
function conversation() {
	clock = 0;
	return [
		m('u1', null),
		m('a1', 'u1'),
		m('u2', 'a1'),
		m('a2', 'u2'),
		m('a1b', 'u1'),
		m('u1e', null),
		m('a3', 'u1e'),
		m('u2e', 'a1'),
		m('a4', 'u2e')
	];
}

const ids = (list: readonly TreeMessage[]) => list.map((x) => x.id);

describe('the branch tree', () => {
	it('shows the newest branch at every fork when nothing was chosen', () => {
		const tree = new MessageTree(conversation());
		expect(ids(tree.visiblePath({}))).toEqual(['u1e', 'a3']);
	});

	it('follows the choices, and the newest child below them', () => {
		const tree = new MessageTree(conversation());
		expect(ids(tree.visiblePath({ [ROOT]: 'u1' }))).toEqual(['u1', 'a1b']);
		expect(ids(tree.visiblePath({ [ROOT]: 'u1', u1: 'a1' }))).toEqual(['u1', 'a1', 'u2e', 'a4']);
		expect(ids(tree.visiblePath({ [ROOT]: 'u1', u1: 'a1', a1: 'u2' }))).toEqual([
			'u1',
			'a1',
			'u2',
			'a2'
		]);
	});

	it('counts siblings in creation order for ‹ i/n ›', () => {
		const tree = new MessageTree(conversation());
		expect(tree.position('u1')).toEqual({ index: 1, count: 2, previous: null, next: 'u1e' });
		expect(tree.position('u1e')).toEqual({ index: 2, count: 2, previous: 'u1', next: null });
		expect(tree.position('a1')).toEqual({ index: 1, count: 2, previous: null, next: 'a1b' });
		expect(tree.position('u2e')).toEqual({ index: 2, count: 2, previous: 'u2', next: null });
		expect(tree.position('a2')).toEqual({ index: 1, count: 1, previous: null, next: null });
	});

	it('orders siblings by time whatever order the server listed them in', () => {
		const shuffled = conversation().reverse();
		const tree = new MessageTree(shuffled);
		expect(ids(tree.childrenOf(null))).toEqual(['u1', 'u1e']);
		expect(ids(tree.childrenOf('u1'))).toEqual(['a1', 'a1b']);
	});

	it('reveals a message deep in an older branch, keeping picks made elsewhere', () => {
		const tree = new MessageTree(conversation());
		const choices = tree.reveal({ u1e: 'a3' }, 'a2');
		expect(choices).toEqual({ [ROOT]: 'u1', u1: 'a1', a1: 'u2', u2: 'a2', u1e: 'a3' });
		expect(ids(tree.visiblePath(choices))).toEqual(['u1', 'a1', 'u2', 'a2']);
		expect(tree.leaf(choices)?.id).toBe('a2');
	});

	it('switching a fork higher up keeps the picks made below it for when it comes back', () => {
		const tree = new MessageTree(conversation());
		let choices = tree.reveal({}, 'a2');
		choices = { ...choices, [ROOT]: tree.position('u1').next! };
		expect(ids(tree.visiblePath(choices))).toEqual(['u1e', 'a3']);
		choices = { ...choices, [ROOT]: tree.position('u1e').previous! };
		expect(ids(tree.visiblePath(choices))).toEqual(['u1', 'a1', 'u2', 'a2']);
	});

	it('ignores a choice of a message that is gone, and shows an orphan as a root', () => {
		clock = 0;
		const tree = new MessageTree([m('u1', null), m('a1', 'u1'), m('x', 'deleted')]);
		expect(ids(tree.visiblePath({ [ROOT]: 'nope' }))).toEqual(['x']);
		expect(ids(tree.visiblePath({ [ROOT]: 'u1' }))).toEqual(['u1', 'a1']);
		expect(tree.position('x').count).toBe(2);
	});

	it('an empty conversation has an empty path and no leaf', () => {
		const tree = new MessageTree([]);
		expect(tree.visiblePath({})).toEqual([]);
		expect(tree.leaf({})).toBeUndefined();
	});
});
