// @vitest-environment jsdom
import { flushSync, mount, unmount } from 'svelte';
import { afterEach, describe, expect, it, vi } from 'vitest';
import type { Message } from '$lib/api';
import ChatMessage from './ChatMessage.svelte';

const user: Message = {
	id: 'u2',
	parent_id: null,
	role: 'user',
	content: 'first <b>words</b>',
	created_at: '2026-12-03T08:00:00Z'
};

function button(root: HTMLElement, name: string): HTMLButtonElement {
	const found = [...root.querySelectorAll('button')].find(
		(b) => (b.getAttribute('aria-label') ?? b.textContent?.trim()) === name
	);
	if (!found) throw new Error(`no button ${name}`);
	return found;
}

describe('ChatMessage', () => {
	let component: ReturnType<typeof mount> | null = null;
	let target: HTMLElement;

	afterEach(() => {
		if (component) unmount(component);
		component = null;
		document.body.innerHTML = '';
	});

	function show(props: Record<string, unknown>) {
		target = document.createElement('div');
		document.body.append(target);
		const handlers = { onchoose: vi.fn(), onedit: vi.fn(), onregenerate: vi.fn() };
		component = mount(ChatMessage, {
			target,
			props: {
				message: user,
				position: { index: 2, count: 3, previous: 'u1', next: 'u3' },
				streaming: false,
				busy: false,
				...handlers,
				...props
			}
		});
		flushSync();
		return handlers;
	}

	it('shows a person’s text as text, and ‹ 2/3 › picks the neighbouring versions', () => {
		const { onchoose } = show({});
		expect(target.querySelector('.user-text')?.textContent).toBe('first <b>words</b>');
		expect(target.querySelector('b')).toBeNull();
		expect(target.querySelector('[data-testid="branch-position"]')?.textContent).toBe('2/3');
		button(target, 'Previous version of this message').click();
		button(target, 'Next version of this message').click();
		expect(onchoose.mock.calls).toEqual([['u1'], ['u3']]);
	});

	it('editing sends the new text for a new branch, and Escape cancels', () => {
		const { onedit } = show({});
		button(target, 'Edit').click();
		flushSync();
		const area = target.querySelector('textarea')!;
		expect(area.value).toBe('first <b>words</b>');
		area.value = '  better words ';
		area.dispatchEvent(new Event('input'));
		flushSync();
		button(target, 'Save and send').click();
		flushSync();
		expect(onedit).toHaveBeenCalledWith(user, 'better words');
		expect(target.querySelector('textarea')).toBeNull();

		button(target, 'Edit').click();
		flushSync();
		target
			.querySelector('textarea')!
			.dispatchEvent(new KeyboardEvent('keydown', { key: 'Escape', bubbles: true }));
		flushSync();
		expect(target.querySelector('textarea')).toBeNull();
		expect(onedit).toHaveBeenCalledTimes(1);
	});

	it('an answer offers regenerate, says it was stopped, and nothing while another streams', () => {
		const answer: Message = {
			id: 'a1',
			parent_id: 'u2',
			role: 'assistant',
			content: 'partial',
			created_at: '2026-12-03T08:00:01Z',
			finish_reason: 'cancelled'
		};
		const { onregenerate } = show({
			message: answer,
			position: { index: 1, count: 1, previous: null, next: null }
		});
		expect(target.querySelector('[data-testid="stopped"]')).not.toBeNull();
		expect(target.querySelector('[data-testid="branch-position"]')).toBeNull();
		button(target, 'Regenerate').click();
		expect(onregenerate).toHaveBeenCalledWith(answer);
		unmount(component!);
		show({
			message: answer,
			busy: true,
			position: { index: 1, count: 1, previous: null, next: null }
		});
		expect(button(target, 'Regenerate').disabled).toBe(true);
	});
});
