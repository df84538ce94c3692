import type { ModelPlacementAnswer, Serving } from './api';
import { fileSize } from './units';

/** The upload's judgement in a sentence: what serves the file, or why nothing here can. */
export function servingText(serving: Serving): string {
	if (serving.status === 'not_servable') return `Not served here: ${serving.reason.message}.`;
	if (serving.engine === 'upstream') return 'Served through an OpenAI-compatible upstream.';
	const what = [serving.architecture, serving.quantisation].filter(Boolean).join(', ');
	return `Served by the built-in engine${what ? ` (${what})` : ''}, needs about ${fileSize(serving.memory_bytes)} of memory.`;
}

/** Where the model is served now, in a sentence; `null` when it is not placed on nodes. */
export function placementText(answer: ModelPlacementAnswer): string | null {
	const placement = answer.placement;
	if (!placement) return null;
	const fallback = answer.in_process ? " Meanwhile the platform's own node answers its calls." : '';
	if (placement.serving_on.length) {
		const n = placement.serving_on.length;
		return `Served by ${n} inference node${n === 1 ? '' : 's'}.`;
	}
	if (placement.loading_on.length) return `Being loaded on an inference node.${fallback}`;
	if (placement.waiting)
		return `Waiting for an inference node: ${placement.waiting.reason}.${fallback}`;
	return `Placed on an inference node, not loaded yet.${fallback}`;
}
