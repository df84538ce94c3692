/**
 * A conversation's messages form a tree by `parent_id`: siblings (children of one parent) are the
 * branches made by editing a message or regenerating an answer, in `created_at` order. The page
 * shows one path from a root down, choosing at each fork the sibling the person picked, else the
 * newest (as ChatGPT does), and offers `‹ 2/3 ›` between the siblings of each shown message.
 * Choices are kept per parent, so switching a fork higher up keeps the picks made below it.
 */

export interface TreeMessage {
	id: string;
	parent_id: string | null;
	created_at: string;
}

/** The picked child of each parent; the key of the roots' "parent" is ROOT. */
export type BranchChoices = Readonly<Record<string, string>>;

export const ROOT = '';

function parentKey(parentId: string | null): string {
	return parentId ?? ROOT;
}

export interface SiblingPosition {
	/** 1-based, as shown: `‹ index/count ›`. */
	index: number;
	count: number;
	previous: string | null;
	next: string | null;
}

export class MessageTree<M extends TreeMessage> {
	private readonly byId = new Map<string, M>();
	private readonly children = new Map<string, M[]>();

	constructor(messages: readonly M[]) {
		for (const message of messages) {
			this.byId.set(message.id, message);
		}
		for (const message of messages) {
			// A message whose parent is unknown (never expected) is shown as a root, not lost.
			const key =
				message.parent_id !== null && this.byId.has(message.parent_id) ? message.parent_id : ROOT;
			const list = this.children.get(key) ?? [];
			list.push(message);
			this.children.set(key, list);
		}
		for (const list of this.children.values()) {
			// Stable: messages created in the same instant keep the server's order.
			list.sort((a, b) => (a.created_at < b.created_at ? -1 : a.created_at > b.created_at ? 1 : 0));
		}
	}

	get(id: string): M | undefined {
		return this.byId.get(id);
	}

	/** The children of a message (null: the roots), oldest first. */
	childrenOf(parentId: string | null): readonly M[] {
		return this.children.get(parentKey(parentId)) ?? [];
	}

	private siblingsOf(message: M): readonly M[] {
		const key =
			message.parent_id !== null && this.byId.has(message.parent_id) ? message.parent_id : ROOT;
		return this.children.get(key) ?? [message];
	}

	/** The path shown: from a root down, the chosen (else newest) child at every fork. */
	visiblePath(choices: BranchChoices): M[] {
		const path: M[] = [];
		const seen = new Set<string>();
		let key = ROOT;
		for (;;) {
			const children = this.children.get(key);
			if (!children || children.length === 0) {
				return path;
			}
			const chosen = children.find((c) => c.id === choices[key]) ?? children[children.length - 1]!;
			if (seen.has(chosen.id)) {
				return path;
			}
			seen.add(chosen.id);
			path.push(chosen);
			key = chosen.id;
		}
	}

	/** Where a message stands among its siblings, and its neighbours for ‹ and ›. */
	position(id: string): SiblingPosition {
		const message = this.byId.get(id);
		if (!message) {
			return { index: 1, count: 1, previous: null, next: null };
		}
		const siblings = this.siblingsOf(message);
		const at = siblings.findIndex((s) => s.id === id);
		return {
			index: at + 1,
			count: siblings.length,
			previous: at > 0 ? siblings[at - 1]!.id : null,
			next: at + 1 < siblings.length ? siblings[at + 1]!.id : null
		};
	}

	/** Choices that show `id`: it and every ancestor become the pick of their parent. */
	reveal(choices: BranchChoices, id: string): BranchChoices {
		const next: Record<string, string> = { ...choices };
		const seen = new Set<string>();
		let message = this.byId.get(id);
		while (message && !seen.has(message.id)) {
			seen.add(message.id);
			const key =
				message.parent_id !== null && this.byId.has(message.parent_id) ? message.parent_id : ROOT;
			next[key] = message.id;
			message = message.parent_id === null ? undefined : this.byId.get(message.parent_id);
		}
		return next;
	}

	/** The last message of the shown path: where a new message goes. */
	leaf(choices: BranchChoices): M | undefined {
		const path = this.visiblePath(choices);
		return path[path.length - 1];
	}
}
