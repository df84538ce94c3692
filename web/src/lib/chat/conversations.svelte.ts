/**
 * The chat's shared state between the sidebar and the conversation shown: the list of the
 * person's conversations (as the server lists them, newest first, filtered by the search), the
 * models they may use, and a first message waiting for its new conversation's page to open.
 */
import { api, describeError, type ChatModel, type ConversationSummary } from '$lib/api';

export const chat = $state<{
	conversations: ConversationSummary[];
	query: string;
	listLoaded: boolean;
	listError: string | null;
	models: ChatModel[];
	modelsLoaded: boolean;
	modelsError: string | null;
}>({
	conversations: [],
	query: '',
	listLoaded: false,
	listError: null,
	models: [],
	modelsLoaded: false,
	modelsError: null
});

let listRequest = 0;

/** Lists the conversations again (after a search, a new answer, a rename or a delete). */
export async function reloadConversations(): Promise<void> {
	// Only the answer to the latest request is shown, however the answers arrive.
	const mine = ++listRequest;
	try {
		const { conversations } = await api.conversations(chat.query.trim() || undefined);
		if (mine === listRequest) {
			chat.conversations = conversations;
			chat.listError = null;
		}
	} catch (e) {
		if (mine === listRequest) {
			chat.listError = describeError(e);
		}
	} finally {
		if (mine === listRequest) {
			chat.listLoaded = true;
		}
	}
}

export async function loadModels(): Promise<void> {
	try {
		chat.models = (await api.chatModels()).models;
		chat.modelsError = null;
	} catch (e) {
		chat.modelsError = describeError(e);
	} finally {
		chat.modelsLoaded = true;
	}
}

/** A model and its payer as one value for a <select>. */
export function modelKey(model: Pick<ChatModel, 'id' | 'entitlement'>): string {
	const payer =
		model.entitlement.kind === 'plan'
			? `plan:${model.entitlement.plan}`
			: `subscription:${model.entitlement.subscription_id}`;
	return `${model.id}\n${payer}`;
}

/** A message typed in a new chat, sent once its conversation's page opens. */
let pending: { conversationId: string; content: string } | null = null;

export function setPendingMessage(conversationId: string, content: string): void {
	pending = { conversationId, content };
}

export function takePendingMessage(conversationId: string): string | null {
	if (pending?.conversationId !== conversationId) {
		return null;
	}
	const { content } = pending;
	pending = null;
	return content;
}
