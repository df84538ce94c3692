/**
 * Money arrives from the server as exact decimal strings ("10.000000"). The page never parses
 * them into numbers: it only drops trailing zeros of the fraction, as text, so what is shown is
 * exactly the server's amount ("10", "0.5", "12.345678").
 */
export function showMoney(amount: string): string {
	if (!/^-?\d+(\.\d+)?$/.test(amount)) {
		return amount;
	}
	return amount.includes('.') ? amount.replace(/0+$/, '').replace(/\.$/, '') : amount;
}

/**
 * An amount as the token's base units (USDT has 6 decimals: "10.5" → 10500000n), computed on
 * the decimal text with integers only, so the wallet is asked for exactly the server's amount.
 * Refuses what is not a plain non-negative decimal or has more decimals than the token.
 */
export function toBaseUnits(amount: string, decimals: number): bigint {
	const match = /^(\d+)(?:\.(\d+))?$/.exec(amount.trim());
	if (!match) {
		throw new Error(`"${amount}" is not an amount`);
	}
	const whole = match[1] ?? '0';
	const fraction = (match[2] ?? '').replace(/0+$/, '');
	if (fraction.length > decimals) {
		throw new Error(`"${amount}" has more than ${decimals} decimals`);
	}
	return BigInt(whole + fraction.padEnd(decimals, '0'));
}
