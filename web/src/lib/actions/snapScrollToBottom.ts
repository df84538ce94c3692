/**
 * Keeps a scrolling list of messages at its bottom while an answer streams in, unless the person
 * scrolled up to read (then it stays where they are), as Hugging Face chat-ui's action does.
 */
import type { Action } from 'svelte/action';

/** How close to the bottom still counts as "at the bottom", in pixels. */
const NEAR_BOTTOM_PX = 48;

export const snapScrollToBottom: Action<HTMLElement> = (node) => {
	let atBottom = true;
	const onScroll = () => {
		atBottom = node.scrollHeight - node.scrollTop - node.clientHeight <= NEAR_BOTTOM_PX;
	};
	const observer = new MutationObserver(() => {
		if (atBottom) {
			node.scrollTop = node.scrollHeight;
		}
	});
	node.addEventListener('scroll', onScroll, { passive: true });
	observer.observe(node, { childList: true, subtree: true, characterData: true });
	node.scrollTop = node.scrollHeight;
	return {
		destroy() {
			observer.disconnect();
			node.removeEventListener('scroll', onScroll);
		}
	};
};
