// @vitest-environment jsdom
import { flushSync, mount, unmount } from 'svelte';
import { afterEach, describe, expect, it, vi } from 'vitest';
import MarkdownView from './MarkdownView.svelte';

describe('MarkdownView', () => {
	let component: ReturnType<typeof mount> | null = null;

	afterEach(() => {
		if (component) unmount(component);
		component = null;
		document.body.innerHTML = '';
		vi.unstubAllGlobals();
	});

	it('shows sanitised Markdown with a copy button on each code block that copies the code', async () => {
		const writeText = vi.fn(async () => undefined);
		vi.stubGlobal('navigator', { clipboard: { writeText } });
		const target = document.createElement('div');
		document.body.append(target);
		component = mount(MarkdownView, {
			target,
			props: { text: '<img src=x onerror=alert(1)>\n\n```js\nlet a = 1;\n```' }
		});
		flushSync();
		expect(target.querySelector('img')).toBeNull();
		expect(target.textContent).toContain('<img src=x onerror=alert(1)>');
		const button = target.querySelector<HTMLButtonElement>('pre > button.copy-code');
		expect(button?.getAttribute('aria-label')).toBe('Copy code');
		button!.click();
		await vi.waitFor(() => expect(button!.textContent).toBe('Copied'));
		expect(writeText).toHaveBeenCalledWith('let a = 1;');
	});
});
