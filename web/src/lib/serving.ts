import type { Serving } from './api';
import { fileSize } from './units';

/** The upload's judgement in a sentence: what serves the file, or why nothing here can. */
export function servingText(serving: Serving): string {
	if (serving.status === 'not_servable') return `Not served here: ${serving.reason.message}.`;
	if (serving.engine === 'upstream') return 'Served through an OpenAI-compatible upstream.';
	const what = [serving.architecture, serving.quantisation].filter(Boolean).join(', ');
	return `Served by the built-in engine${what ? ` (${what})` : ''}, needs about ${fileSize(serving.memory_bytes)} of memory.`;
}
