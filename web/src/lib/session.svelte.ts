/**
 * Who is signed in, as the server says (`GET /api/auth/me` with the session cookie). The page
 * keeps no token: a reload asks the server again.
 */
import { api, ApiError, type Me } from '$lib/api';

export const session = $state<{ user: Me | null; loaded: boolean }>({ user: null, loaded: false });

/** Asks the server who this browser's cookie belongs to; a 401 means nobody. */
export async function refreshSession(): Promise<Me | null> {
	try {
		session.user = await api.me();
	} catch (error) {
		if (!(error instanceof ApiError && error.status === 401)) {
			throw error;
		}
		session.user = null;
	} finally {
		session.loaded = true;
	}
	return session.user;
}

export async function signOut(): Promise<void> {
	await api.logout();
	session.user = null;
}

/** A local path to return to after sign-in; anything else (another origin) goes home. */
export function safeNext(next: string | null): string {
	if (next && next.startsWith('/') && !next.startsWith('//') && !next.startsWith('/\\')) {
		return next;
	}
	return '/account';
}
