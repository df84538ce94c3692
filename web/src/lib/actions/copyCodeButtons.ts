/**
 * Gives every code block inside the node a "Copy" button. The buttons are made here with the DOM
 * (never from model output) and put inside each `<pre>`, so they go away with it when the
 * rendered Markdown changes; a MutationObserver adds them to blocks that arrive while an answer
 * streams.
 */
import type { Action } from 'svelte/action';

const BUTTON_CLASS = 'copy-code';
const COPIED_MS = 1500;

function addButtons(root: HTMLElement) {
	for (const pre of root.querySelectorAll('pre')) {
		const code = pre.querySelector('code');
		if (!code || pre.querySelector(`:scope > button.${BUTTON_CLASS}`)) {
			continue;
		}
		const button = document.createElement('button');
		button.type = 'button';
		button.className = BUTTON_CLASS;
		button.textContent = 'Copy';
		button.setAttribute('aria-label', 'Copy code');
		button.addEventListener('click', async () => {
			try {
				await navigator.clipboard.writeText(code.textContent ?? '');
				button.textContent = 'Copied';
			} catch {
				button.textContent = 'Copy failed';
			}
			setTimeout(() => (button.textContent = 'Copy'), COPIED_MS);
		});
		pre.prepend(button);
	}
}

export const copyCodeButtons: Action<HTMLElement> = (node) => {
	addButtons(node);
	const observer = new MutationObserver(() => addButtons(node));
	observer.observe(node, { childList: true, subtree: true });
	return {
		destroy() {
			observer.disconnect();
		}
	};
};
