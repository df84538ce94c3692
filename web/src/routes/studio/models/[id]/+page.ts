// One of the person's models in the studio. Another person's is the 404 page.
import { error, redirect } from '@sveltejs/kit';
import { api, ApiError } from '$lib/api';
import type { PageLoad } from './$types';

export const load: PageLoad = async ({ params, url }) => {
	try {
		return { model: (await api.model(params.id)).model };
	} catch (e) {
		if (e instanceof ApiError && (e.status === 404 || e.status === 403)) {
			error(404, 'This model does not exist, or it is not yours.');
		}
		if (e instanceof ApiError && e.status === 401) {
			redirect(307, `/signin?next=${encodeURIComponent(url.pathname)}`);
		}
		throw e;
	}
};
