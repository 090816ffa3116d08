//! Writing replies: the rows a request creates, the prompt (the character's system text and the
//! path to the new reply's parent, rendered with the model's chat template), the job on the
//! engine thread, and the server-sent events to the browser.
//!
//! The reply's text is saved to the store before each piece of it is sent, so whatever the
//! browser has seen survives the server being killed. A browser that goes away stops the
//! generation, and the reply keeps its text with status `stopped`.

use super::auth::{error, SignedIn};
use super::{api_error, body};
use crate::engine::{Event, Job, EVENTS_PER_SEQUENCE};
use crate::{chat_prompt, ApiError, AppState};
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::sse::{Event as SseEvent, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use conch_app::{ChatMessage, Message, Role, Status, Store};
use conch_engine::GenerateOptions;
use serde::Deserialize;
use serde_json::{json, Value};
use std::convert::Infallible;
use tokio::sync::mpsc;

/// Tokens a reply may have at most (less when the context has less room left).
const MAX_REPLY_TOKENS: usize = 4096;
/// Room a prompt must leave for the reply; older messages are left out to make it.
const MIN_REPLY_TOKENS: usize = 64;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewMessage {
    content: String,
    parent_id: Option<String>,
}

/// `POST /api/conversations/{id}/messages`: the person's message, then the streamed reply.
pub(super) async fn send(
    State(state): State<AppState>,
    SignedIn(s): SignedIn,
    Path(conversation_id): Path<String>,
    bytes: Bytes,
) -> Result<Response, ApiError> {
    let new: NewMessage = body(&bytes)?;
    if new.content.trim().is_empty() {
        return Err(error(
            StatusCode::BAD_REQUEST,
            "bad_input",
            "the message is empty",
        ));
    }
    let store = state.app()?.store.clone();
    let user = s.user.id.as_str();
    let parent = match new.parent_id {
        Some(parent) => Some(parent),
        None => store
            .current_leaf(user, &conversation_id)
            .await
            .map_err(api_error)?,
    };
    let message = store
        .add_message(
            user,
            &conversation_id,
            parent.as_deref(),
            Role::User,
            &new.content,
            Status::Complete,
            None,
        )
        .await
        .map_err(api_error)?;
    reply(&state, store, s.user.id.clone(), message).await
}

/// `POST /api/messages/{id}/regenerate`: another reply beside an assistant message.
pub(super) async fn regenerate(
    State(state): State<AppState>,
    SignedIn(s): SignedIn,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let store = state.app()?.store.clone();
    let original = store.message(&s.user.id, &id).await.map_err(api_error)?;
    if original.role != Role::Assistant {
        return Err(error(
            StatusCode::BAD_REQUEST,
            "bad_input",
            "only a reply (an assistant message) can be regenerated",
        ));
    }
    let prompt_end = match &original.parent_id {
        Some(parent) => Some(store.message(&s.user.id, parent).await.map_err(api_error)?),
        None => None,
    };
    start_reply(
        &state,
        store,
        s.user.id.clone(),
        &original.conversation_id,
        prompt_end,
        Vec::new(),
    )
    .await
}

/// `POST /api/messages/{id}/edit`: an edited user message branches and gets a reply; an edited
/// reply is stored beside the original (no generation) and answers the new message.
pub(super) async fn edit(
    State(state): State<AppState>,
    SignedIn(s): SignedIn,
    Path(id): Path<String>,
    bytes: Bytes,
) -> Result<Response, ApiError> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Edit {
        content: String,
    }
    let e: Edit = body(&bytes)?;
    let store = state.app()?.store.clone();
    let edited = store
        .edit_message(&s.user.id, &id, &e.content)
        .await
        .map_err(api_error)?;
    if edited.role == Role::Assistant {
        return Ok(Json(json!(edited)).into_response());
    }
    reply(&state, store, s.user.id.clone(), edited).await
}

/// Streams a reply to `message` (which the request created and reports first).
async fn reply(
    state: &AppState,
    store: Store,
    user: String,
    message: Message,
) -> Result<Response, ApiError> {
    let conversation_id = message.conversation_id.clone();
    start_reply(
        state,
        store,
        user,
        &conversation_id,
        Some(message.clone()),
        vec![message],
    )
    .await
}

/// Creates the reply's row under `prompt_end` and streams it; `created` are rows this request
/// made before it, announced first.
async fn start_reply(
    state: &AppState,
    store: Store,
    user: String,
    conversation_id: &str,
    prompt_end: Option<Message>,
    mut created: Vec<Message>,
) -> Result<Response, ApiError> {
    let model_name = state.inner.model.name.clone();
    let parent_id = prompt_end.as_ref().map(|m| m.id.clone());
    let reply = store
        .add_message(
            &user,
            conversation_id,
            parent_id.as_deref(),
            Role::Assistant,
            "",
            Status::Streaming,
            Some(&model_name),
        )
        .await
        .map_err(api_error)?;
    created.push(reply.clone());
    let (sender, receiver) = mpsc::channel::<SseEvent>(EVENTS_PER_SEQUENCE);
    let state = state.clone();
    tokio::spawn(async move {
        for message in &created {
            let _ = sender
                .send(event(json!({ "type": "message", "message": message })))
                .await;
        }
        let outcome = match prepare(
            &state,
            &store,
            &user,
            &reply.conversation_id,
            parent_id.as_deref(),
        )
        .await
        {
            Ok((prompt, options)) => {
                run(&state, &store, &user, &reply, prompt, options, &sender).await
            }
            Err(message) => Err(message),
        };
        let (status, failure) = match outcome {
            Ok(status) => (status, None),
            Err(message) => (Status::Failed, Some(message)),
        };
        if let Err(e) = finish(&store, &user, &reply.id, status).await {
            let _ = sender
                .send(event(
                    json!({ "type": "error", "message_id": reply.id, "error": e }),
                ))
                .await;
            return;
        }
        let last = match failure {
            Some(message) => json!({ "type": "error", "message_id": reply.id, "error": message }),
            None => match store.message(&user, &reply.id).await {
                Ok(message) => json!({ "type": "done", "message": message }),
                Err(e) => {
                    json!({ "type": "error", "message_id": reply.id, "error": e.to_string() })
                }
            },
        };
        let _ = sender.send(event(last)).await;
    });
    let events = futures_util::stream::unfold(receiver, |mut receiver| async move {
        receiver
            .recv()
            .await
            .map(|e| (Ok::<_, Infallible>(e), receiver))
    });
    Ok(Sse::new(events).into_response())
}

fn event(data: Value) -> SseEvent {
    SseEvent::default().data(data.to_string())
}

/// Sets the reply's final status, keeping the text saved so far.
async fn finish(store: &Store, user: &str, id: &str, status: Status) -> Result<(), String> {
    let message = store.message(user, id).await.map_err(|e| e.to_string())?;
    store
        .save_reply(user, id, &message.content, status)
        .await
        .map_err(|e| e.to_string())
}

/// The tokenized prompt and the generation options, or why there are none.
async fn prepare(
    state: &AppState,
    store: &Store,
    user: &str,
    conversation_id: &str,
    prompt_end: Option<&str>,
) -> Result<(Vec<u32>, GenerateOptions), String> {
    let mut messages = store
        .prompt_messages(user, conversation_id, prompt_end)
        .await
        .map_err(|e| e.to_string())?;
    let model = state.inner.model.clone();
    let context = state.inner.context;
    let prompt = tokio::task::spawn_blocking(move || fit_prompt(&model, &mut messages, context))
        .await
        .map_err(|_| "rendering the prompt failed".to_string())??;
    let options = GenerateOptions {
        max_tokens: (context - prompt.len()).min(MAX_REPLY_TOKENS),
        sampling: state.inner.model.default_sampling.clone(),
        ..GenerateOptions::default()
    };
    Ok((prompt, options))
}

/// Renders `messages`, leaving out the oldest non-system ones until the reply has room.
fn fit_prompt(
    model: &conch_engine::LoadedModel,
    messages: &mut Vec<ChatMessage>,
    context: usize,
) -> Result<Vec<u32>, String> {
    let room = MIN_REPLY_TOKENS.min(context / 2).max(1);
    loop {
        let prompt = render(model, messages)?;
        if prompt.len() + room <= context {
            return Ok(prompt);
        }
        let oldest = messages.iter().position(|m| m.role != "system");
        match oldest {
            // Keep the last message: it is what is being answered.
            Some(i) if messages.len() - i > 1 => {
                messages.remove(i);
            }
            _ => {
                return Err(format!(
                    "the prompt has {} tokens and the model's context holds {context}; shorten the message or the character's text",
                    prompt.len()
                ))
            }
        }
    }
}

/// The messages through the chat template; a template that refuses them (many insist on
/// user, assistant, user, … turns) gets them again in that shape.
fn render(model: &conch_engine::LoadedModel, messages: &[ChatMessage]) -> Result<Vec<u32>, String> {
    let values = |messages: &[ChatMessage]| -> Vec<Value> {
        messages
            .iter()
            .map(|m| json!({ "role": m.role, "content": m.content }))
            .collect()
    };
    chat_prompt(model, &values(messages), None).or_else(|first| {
        chat_prompt(model, &values(&alternating(messages)), None).map_err(|_| first.message)
    })
}

/// One system message first (all system texts, and any replies before the first user message,
/// such as a character's greeting), then user and assistant turns in turn: neighbours with the
/// same role are joined.
fn alternating(messages: &[ChatMessage]) -> Vec<ChatMessage> {
    let mut system = Vec::new();
    let mut turns: Vec<ChatMessage> = Vec::new();
    for m in messages {
        if m.role == "system" {
            system.push(m.content.clone());
        } else if turns.is_empty() && m.role == "assistant" {
            system.push(format!(
                "You opened the conversation with this message:\n{}",
                m.content
            ));
        } else {
            match turns.last_mut() {
                Some(last) if last.role == m.role => {
                    last.content.push_str("\n\n");
                    last.content.push_str(&m.content);
                }
                _ => turns.push(m.clone()),
            }
        }
    }
    if !system.is_empty() {
        turns.insert(
            0,
            ChatMessage {
                role: "system".into(),
                content: system.join("\n\n"),
            },
        );
    }
    turns
}

/// Generates the reply, saving its text before each piece is sent. The status it ends with:
/// complete, or stopped when the browser went away.
async fn run(
    state: &AppState,
    store: &Store,
    user: &str,
    reply: &Message,
    prompt: Vec<u32>,
    options: GenerateOptions,
    sender: &mpsc::Sender<SseEvent>,
) -> Result<Status, String> {
    let (events_sender, mut events) = mpsc::channel(EVENTS_PER_SEQUENCE);
    state
        .inner
        .engine
        .submit(vec![Job {
            prompt,
            options,
            index: 0,
            events: events_sender,
        }])
        .map_err(|e| e.to_string())?;
    let mut content = String::new();
    loop {
        let first = tokio::select! {
            event = events.recv() => event,
            // Dropping `events` on return tells the engine to drop the sequence.
            _ = sender.closed() => return Ok(Status::Stopped),
        };
        let Some(first) = first else {
            return Err("the engine stopped before the reply was complete".into());
        };
        let mut pending = vec![first];
        // Whatever else is ready joins this save, so a fast model does not write once per token.
        while let Ok(more) = events.try_recv() {
            pending.push(more);
        }
        let mut delta = String::new();
        let mut done = false;
        for event in pending {
            match event {
                Event::Text { text, finished, .. } => {
                    delta.push_str(&text);
                    done |= finished.is_some();
                }
                Event::Failed { message, .. } => {
                    content.push_str(&delta);
                    save(store, user, &reply.id, &content).await?;
                    return Err(message);
                }
            }
        }
        if !delta.is_empty() {
            content.push_str(&delta);
            save(store, user, &reply.id, &content).await?;
            let sent = sender
                .send(event(
                    json!({ "type": "delta", "message_id": reply.id, "text": delta }),
                ))
                .await;
            if sent.is_err() {
                return Ok(Status::Stopped);
            }
        }
        if done {
            return Ok(Status::Complete);
        }
    }
}

async fn save(store: &Store, user: &str, id: &str, content: &str) -> Result<(), String> {
    store
        .save_reply(user, id, content, Status::Streaming)
        .await
        .map_err(|e| e.to_string())
}
