import { describe, expect, it } from 'vitest';
import { counted, fileSize } from './units';

describe('counts and sizes', () => {
	it('say one thing in the singular and others in the plural', () => {
		expect(counted(1, 'request')).toBe('1 request');
		expect(counted(0, 'request')).toBe('0 requests');
		expect(counted(12_000, 'token')).toBe('12,000 tokens');
		expect(counted(2, 'reply', 'replies')).toBe('2 replies');
	});

	it('give tiny files in bytes and big ones in the largest fitting unit', () => {
		expect(fileSize(83)).toBe('83 bytes');
		expect(fileSize(1)).toBe('1 byte');
		expect(fileSize(1023)).toBe('1,023 bytes');
		expect(fileSize(1024)).toBe('1.0 KB');
		expect(fileSize(1536)).toBe('1.5 KB');
		expect(fileSize(138_127_104)).toBe('131.7 MB');
		expect(fileSize(3 * 1024 ** 3)).toBe('3.0 GB');
	});
});
