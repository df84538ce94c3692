/**
 * Percentages of a revenue split, exact: "33.33" is 3333 hundredths, an integer, so a total is
 * never a float's approximation. The server enforces the same rule (2 decimals, sum 100); the
 * page only says it before sending.
 */

/** "50" → 5000, "33.33" → 3333; null when not a plain number with at most 2 decimals in 0-100. */
export function hundredths(text: string): number | null {
	const match = /^(\d{1,3})(?:\.(\d{1,2}))?$/.exec(text.trim());
	if (!match) return null;
	const value = Number(match[1]) * 100 + Number((match[2] ?? '').padEnd(2, '0'));
	return value <= 10_000 ? value : null;
}

/** 9900 → "99", 3333 → "33.33", 5 → "0.05". */
export function showHundredths(value: number): string {
	const whole = Math.floor(value / 100);
	const fraction = String(value % 100)
		.padStart(2, '0')
		.replace(/0+$/, '');
	return fraction ? `${whole}.${fraction}` : String(whole);
}

export type SplitCheck =
	{ ok: true; total: number } | { ok: false; total: number | null; problem: string };

/** Whether the typed shares make a split the server would take (members are checked there). */
export function checkSplit(percents: string[]): SplitCheck {
	let total = 0;
	for (const text of percents) {
		const value = hundredths(text);
		if (value === null) {
			return {
				ok: false,
				total: null,
				problem: `“${text}” is not a percentage with at most 2 decimals.`
			};
		}
		total += value;
	}
	if (total !== 10_000) {
		return {
			ok: false,
			total,
			problem: `The shares add up to ${showHundredths(total)}%; they must add up to exactly 100%.`
		};
	}
	return { ok: true, total };
}
