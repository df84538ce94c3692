/**
 * Counts and sizes in words: "1 request", "2 requests"; "83 bytes", "1.5 KB", "4.2 MB". Sizes
 * are binary (1 KB = 1,024 bytes), as the upload form counts them.
 */

const count = new Intl.NumberFormat('en-US');

/** "1 request", "1,200 requests"; `plural` for nouns that do not just take an "s". */
export function counted(n: number, noun: string, plural = `${noun}s`): string {
	return `${count.format(n)} ${n === 1 ? noun : plural}`;
}

const UNITS = ['KB', 'MB', 'GB', 'TB'];

/** A file size: whole bytes below 1 KB, else one decimal in the largest unit that keeps it ≥ 1. */
export function fileSize(bytes: number): string {
	if (bytes < 1024) return counted(bytes, 'byte');
	let value = bytes / 1024;
	let unit = 0;
	while (value >= 1024 && unit < UNITS.length - 1) {
		value /= 1024;
		unit += 1;
	}
	return `${value.toFixed(1)} ${UNITS[unit]}`;
}
