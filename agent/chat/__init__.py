"""Chat about one feature: persistent threads in Redis, and an agent that answers each
message by running experiments through the feature (streamed as events).

    store = ChatStore(redis_client, subject)
    agent = ChatAgent(deps)
    thread = agent.start_thread(store, feature)
    events = await agent.respond(store, thread.id, feature, 'does it fire on "I love dogs"?')
    async for event in events:  # understood, experiment*, verdict?, answer, done | error
        ...

No HTTP and no settings here: the API maps `ChatError`s to 4xx and events to SSE.
"""

from agent.chat.agent import ChatAgent
from agent.chat.intent import MAX_MESSAGE_CHARS, MAX_TEST_TEXTS, Request, understand
from agent.chat.models import (
    AnswerEvent,
    ChatError,
    ChatEvent,
    ChatExperiment,
    ChatInputError,
    ChatMessage,
    ChatStoreError,
    ChatThread,
    ChatVerdict,
    DoneEvent,
    ErrorEvent,
    ExperimentEvent,
    Intent,
    UnderstoodEvent,
    UnknownFeatureError,
    UnknownThreadError,
    VerdictEvent,
    new_id,
)
from agent.chat.store import ChatStore

__all__ = [
    "MAX_MESSAGE_CHARS",
    "MAX_TEST_TEXTS",
    "AnswerEvent",
    "ChatAgent",
    "ChatError",
    "ChatEvent",
    "ChatExperiment",
    "ChatInputError",
    "ChatMessage",
    "ChatStore",
    "ChatStoreError",
    "ChatThread",
    "ChatVerdict",
    "DoneEvent",
    "ErrorEvent",
    "ExperimentEvent",
    "Intent",
    "Request",
    "UnderstoodEvent",
    "UnknownFeatureError",
    "UnknownThreadError",
    "VerdictEvent",
    "new_id",
    "understand",
]
