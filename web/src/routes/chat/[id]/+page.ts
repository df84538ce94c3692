// A saved conversation. Another person's (or a deleted) one answers 404, shown as the 404 page.
import { error, redirect } from '@sveltejs/kit';
import { api, ApiError } from '$lib/api';
import type { PageLoad } from './$types';

export const load: PageLoad = async ({ params, url }) => {
	try {
		return { conversation: await api.conversation(params.id) };
	} catch (e) {
		if (e instanceof ApiError && e.status === 404) {
			error(404, 'This conversation does not exist, or it is not yours.');
		}
		if (e instanceof ApiError && e.status === 401) {
			redirect(307, `/signin?next=${encodeURIComponent(url.pathname)}`);
		}
		throw e;
	}
};
