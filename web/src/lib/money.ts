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
