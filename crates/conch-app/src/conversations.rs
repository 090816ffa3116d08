//! Conversations as trees of messages. Siblings (messages with the same parent) are alternatives:
//! regenerated replies, or edits. Each sibling group has one `chosen` message, the one the person
//! last kept, and following the chosen children from the root gives the current branch.

use crate::feedback::Feedback;
use crate::{check_len, new_id, now_ms, AppError, Result, Store};
use serde::{Deserialize, Serialize};
use sqlx::any::AnyRow;
use sqlx::Row;
use std::collections::HashMap;

const MAX_CONTENT: usize = 200_000;
const MAX_TITLE: usize = 200;
/// Characters of the first message that name an untitled conversation.
const AUTO_TITLE: usize = 60;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    System,
    User,
    Assistant,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::System => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
        }
    }

    fn parse(s: &str) -> Result<Role> {
        match s {
            "system" => Ok(Role::System),
            "user" => Ok(Role::User),
            "assistant" => Ok(Role::Assistant),
            other => Err(AppError::Internal(format!(
                "the database holds an unknown role '{other}'"
            ))),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Complete,
    /// Being generated now (or the server died while generating it).
    Streaming,
    /// Generation was stopped (the person pressed stop, or the server restarted).
    Stopped,
    Failed,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Complete => "complete",
            Status::Streaming => "streaming",
            Status::Stopped => "stopped",
            Status::Failed => "failed",
        }
    }

    fn parse(s: &str) -> Result<Status> {
        match s {
            "complete" => Ok(Status::Complete),
            "streaming" => Ok(Status::Streaming),
            "stopped" => Ok(Status::Stopped),
            "failed" => Ok(Status::Failed),
            other => Err(AppError::Internal(format!(
                "the database holds an unknown message status '{other}'"
            ))),
        }
    }
}

#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Conversation {
    pub id: String,
    /// Empty until the first message names it (or the person does).
    pub title: String,
    pub character_id: Option<String>,
    pub model: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Message {
    pub id: String,
    pub conversation_id: String,
    pub parent_id: Option<String>,
    pub role: Role,
    pub content: String,
    pub status: Status,
    pub model: Option<String>,
    pub created_at: i64,
    pub chosen: bool,
    /// This person's rating of the message.
    pub feedback: Option<Feedback>,
}

/// A message as a chat template (and a training-data file) wants it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
}

#[derive(Clone, Debug, Default, Deserialize)]
pub struct NewConversation {
    pub title: Option<String>,
    pub character_id: Option<String>,
    pub model: Option<String>,
}

const CONVERSATION_COLUMNS: &str = "id, title, character_id, model, created_at, updated_at";
const MESSAGE_COLUMNS: &str = "m.id, m.conversation_id, m.parent_id, m.role, m.content, m.status, m.model, m.created_at, m.chosen, f.rating, f.reasons, f.comment";

fn conversation_from_row(row: &AnyRow) -> Result<Conversation> {
    Ok(Conversation {
        id: row.try_get("id")?,
        title: row.try_get("title")?,
        character_id: row.try_get("character_id")?,
        model: row.try_get("model")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

fn message_from_row(row: &AnyRow) -> Result<Message> {
    let rating: Option<i64> = row.try_get("rating")?;
    let feedback = match rating {
        Some(rating) => {
            let reasons: String = row.try_get("reasons")?;
            Some(Feedback {
                rating,
                reasons: serde_json::from_str(&reasons).map_err(|e| {
                    AppError::Internal(format!("stored feedback reasons are not JSON: {e}"))
                })?,
                comment: row.try_get("comment")?,
            })
        }
        None => None,
    };
    Ok(Message {
        id: row.try_get("id")?,
        conversation_id: row.try_get("conversation_id")?,
        parent_id: row.try_get("parent_id")?,
        role: Role::parse(&row.try_get::<String, _>("role")?)?,
        content: row.try_get("content")?,
        status: Status::parse(&row.try_get::<String, _>("status")?)?,
        model: row.try_get("model")?,
        created_at: row.try_get("created_at")?,
        chosen: row.try_get::<i64, _>("chosen")? != 0,
        feedback,
    })
}

/// `%`, `_` and `\` in a search text match themselves.
fn like_pattern(text: &str) -> String {
    let mut pattern = String::from("%");
    for c in text.to_lowercase().chars() {
        if matches!(c, '%' | '_' | '\\') {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern.push('%');
    pattern
}

/// The path from the root to `id` (inclusive), given all of a conversation's messages.
pub(crate) fn path_to<'m>(messages: &'m [Message], id: &str) -> Vec<&'m Message> {
    let by_id: HashMap<&str, &Message> = messages.iter().map(|m| (m.id.as_str(), m)).collect();
    let mut path = Vec::new();
    let mut next = by_id.get(id).copied();
    while let Some(m) = next {
        if path.len() > messages.len() {
            break; // a cycle cannot be built through this API; never loop on a corrupted one
        }
        path.push(m);
        next = m.parent_id.as_deref().and_then(|p| by_id.get(p).copied());
    }
    path.reverse();
    path
}

/// The end of the current branch: from the root, the chosen (else the newest) child each time.
pub(crate) fn current_leaf(messages: &[Message]) -> Option<&Message> {
    let pick = |parent: Option<&str>| {
        let children: Vec<&Message> = messages
            .iter()
            .filter(|m| m.parent_id.as_deref() == parent)
            .collect();
        children
            .iter()
            .copied()
            .find(|m| m.chosen)
            .or_else(|| children.last().copied())
    };
    let mut leaf = pick(None)?;
    for _ in 0..messages.len() {
        match pick(Some(&leaf.id)) {
            Some(child) => leaf = child,
            None => break,
        }
    }
    Some(leaf)
}

impl Store {
    /// The user's conversations, most recently active first; `query` filters by a
    /// case-insensitive substring of the title or of any message.
    pub async fn list_conversations(
        &self,
        user: &str,
        query: Option<&str>,
    ) -> Result<Vec<Conversation>> {
        let query = query.map(str::trim).filter(|q| !q.is_empty());
        let rows = match query {
            None => {
                sqlx::query(&format!(
                    "SELECT {CONVERSATION_COLUMNS} FROM conversations WHERE owner_id = $1 ORDER BY updated_at DESC, id"
                ))
                .bind(user)
                .fetch_all(&self.pool)
                .await?
            }
            Some(q) => {
                check_len("q", q, 500)?;
                sqlx::query(&format!(
                    "SELECT {CONVERSATION_COLUMNS} FROM conversations c WHERE c.owner_id = $1 AND (
                        LOWER(c.title) LIKE $2 ESCAPE '\\'
                        OR EXISTS (SELECT 1 FROM messages m WHERE m.conversation_id = c.id AND LOWER(m.content) LIKE $2 ESCAPE '\\'))
                     ORDER BY c.updated_at DESC, c.id"
                ))
                .bind(user)
                .bind(like_pattern(q))
                .fetch_all(&self.pool)
                .await?
            }
        };
        rows.iter().map(conversation_from_row).collect()
    }

    /// Starts a conversation; with a character that has a greeting, the greeting is its first message.
    pub async fn create_conversation(
        &self,
        user: &str,
        new: NewConversation,
    ) -> Result<Conversation> {
        let title = new.title.as_deref().map(str::trim).unwrap_or("");
        check_len("title", title, MAX_TITLE)?;
        if let Some(model) = &new.model {
            check_len("model", model, 200)?;
        }
        let character = match &new.character_id {
            Some(id) => Some(self.character(user, id).await?),
            None => None,
        };
        let now = now_ms();
        let conversation = Conversation {
            id: new_id()?,
            title: title.to_string(),
            character_id: new.character_id.clone(),
            model: new.model.clone(),
            created_at: now,
            updated_at: now,
        };
        sqlx::query(
            "INSERT INTO conversations (id, owner_id, title, character_id, model, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&conversation.id)
        .bind(user)
        .bind(&conversation.title)
        .bind(&conversation.character_id)
        .bind(&conversation.model)
        .bind(now)
        .bind(now)
        .execute(&self.pool)
        .await?;
        if let Some(character) = character.filter(|c| !c.greeting.trim().is_empty()) {
            let me = self.user(user).await?;
            let greeting = character.fill_names(&character.greeting, &me.display_name);
            self.add_message(
                user,
                &conversation.id,
                None,
                Role::Assistant,
                &greeting,
                Status::Complete,
                None,
            )
            .await?;
        }
        self.conversation(user, &conversation.id).await
    }

    pub async fn conversation(&self, user: &str, id: &str) -> Result<Conversation> {
        let row = sqlx::query(&format!(
            "SELECT {CONVERSATION_COLUMNS} FROM conversations WHERE id = $1 AND owner_id = $2"
        ))
        .bind(id)
        .bind(user)
        .fetch_optional(&self.pool)
        .await?
        .ok_or(AppError::NotFound("conversation"))?;
        conversation_from_row(&row)
    }

    /// Every message of the conversation (all branches), oldest first.
    pub async fn messages(&self, user: &str, conversation_id: &str) -> Result<Vec<Message>> {
        self.conversation(user, conversation_id).await?;
        let rows = sqlx::query(&format!(
            "SELECT {MESSAGE_COLUMNS} FROM messages m
             LEFT JOIN feedback f ON f.message_id = m.id AND f.owner_id = m.owner_id
             WHERE m.conversation_id = $1 AND m.owner_id = $2 ORDER BY m.seq"
        ))
        .bind(conversation_id)
        .bind(user)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(message_from_row).collect()
    }

    pub async fn rename_conversation(
        &self,
        user: &str,
        id: &str,
        title: &str,
    ) -> Result<Conversation> {
        let title = title.trim();
        check_len("title", title, MAX_TITLE)?;
        let r = sqlx::query(
            "UPDATE conversations SET title = $1, updated_at = $2 WHERE id = $3 AND owner_id = $4",
        )
        .bind(title)
        .bind(now_ms())
        .bind(id)
        .bind(user)
        .execute(&self.pool)
        .await?;
        if r.rows_affected() == 0 {
            return Err(AppError::NotFound("conversation"));
        }
        self.conversation(user, id).await
    }

    /// Deletes the conversation with its messages, ratings and recorded preferences.
    pub async fn delete_conversation(&self, user: &str, id: &str) -> Result<()> {
        self.conversation(user, id).await?;
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "DELETE FROM feedback WHERE owner_id = $1 AND message_id IN (SELECT id FROM messages WHERE conversation_id = $2)",
        )
        .bind(user)
        .bind(id)
        .execute(&mut *tx)
        .await?;
        for statement in [
            "DELETE FROM preferences WHERE owner_id = $1 AND conversation_id = $2",
            "DELETE FROM messages WHERE owner_id = $1 AND conversation_id = $2",
            "DELETE FROM conversations WHERE owner_id = $1 AND id = $2",
        ] {
            sqlx::query(statement)
                .bind(user)
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub async fn message(&self, user: &str, id: &str) -> Result<Message> {
        let row = sqlx::query(&format!(
            "SELECT {MESSAGE_COLUMNS} FROM messages m
             LEFT JOIN feedback f ON f.message_id = m.id AND f.owner_id = m.owner_id
             WHERE m.id = $1 AND m.owner_id = $2"
        ))
        .bind(id)
        .bind(user)
        .fetch_optional(&self.pool)
        .await?
        .ok_or(AppError::NotFound("message"))?;
        message_from_row(&row)
    }

    /// Adds a message under `parent_id` (None: a root) and makes it the chosen one of its siblings.
    /// The first user message names an untitled conversation.
    #[allow(clippy::too_many_arguments)]
    pub async fn add_message(
        &self,
        user: &str,
        conversation_id: &str,
        parent_id: Option<&str>,
        role: Role,
        content: &str,
        status: Status,
        model: Option<&str>,
    ) -> Result<Message> {
        check_len("content", content, MAX_CONTENT)?;
        let conversation = self.conversation(user, conversation_id).await?;
        if let Some(parent) = parent_id {
            let parent = self.message(user, parent).await?;
            if parent.conversation_id != conversation_id {
                return Err(AppError::NotFound("message"));
            }
        }
        let now = now_ms();
        let id = new_id()?;
        let mut tx = self.pool.begin().await?;
        let unchoose = match parent_id {
            Some(_) => "UPDATE messages SET chosen = 0 WHERE conversation_id = $1 AND parent_id = $2",
            None => "UPDATE messages SET chosen = 0 WHERE conversation_id = $1 AND parent_id IS NULL AND id <> $2",
        };
        sqlx::query(unchoose)
            .bind(conversation_id)
            .bind(parent_id.unwrap_or(&id))
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO messages (id, conversation_id, owner_id, parent_id, role, content, status, model, chosen, created_at, seq)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 1, $9,
                     (SELECT COALESCE(MAX(seq), 0) + 1 FROM messages WHERE conversation_id = $2))",
        )
        .bind(&id)
        .bind(conversation_id)
        .bind(user)
        .bind(parent_id)
        .bind(role.as_str())
        .bind(content)
        .bind(status.as_str())
        .bind(model)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        let title = if conversation.title.is_empty() && role == Role::User {
            let words = content.split_whitespace().collect::<Vec<_>>().join(" ");
            let mut title: String = words.chars().take(AUTO_TITLE).collect();
            if words.chars().count() > AUTO_TITLE {
                title.push('…');
            }
            title
        } else {
            conversation.title
        };
        sqlx::query("UPDATE conversations SET updated_at = $1, title = $2 WHERE id = $3")
            .bind(now)
            .bind(&title)
            .bind(conversation_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        self.message(user, &id).await
    }

    /// The end of the conversation's current branch (None when it has no messages).
    pub async fn current_leaf(&self, user: &str, conversation_id: &str) -> Result<Option<String>> {
        let messages = self.messages(user, conversation_id).await?;
        Ok(current_leaf(&messages).map(|m| m.id.clone()))
    }

    /// Saves a reply's text so far and its status (the generator calls this as the text grows).
    pub async fn save_reply(
        &self,
        user: &str,
        message_id: &str,
        content: &str,
        status: Status,
    ) -> Result<()> {
        let r = sqlx::query(
            "UPDATE messages SET content = $1, status = $2 WHERE id = $3 AND owner_id = $4",
        )
        .bind(content)
        .bind(status.as_str())
        .bind(message_id)
        .bind(user)
        .execute(&self.pool)
        .await?;
        if r.rows_affected() == 0 {
            return Err(AppError::NotFound("message"));
        }
        Ok(())
    }

    /// Marks replies left `streaming` by a server that stopped as `stopped`; returns how many.
    pub async fn stop_interrupted_replies(&self) -> Result<u64> {
        let r = sqlx::query("UPDATE messages SET status = 'stopped' WHERE status = 'streaming'")
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected())
    }

    /// What the model reads to write the message after `last`: the character's system prompt
    /// (and example dialogue) first, then the path from the root to `last` (None: only the system part).
    pub async fn prompt_messages(
        &self,
        user: &str,
        conversation_id: &str,
        last: Option<&str>,
    ) -> Result<Vec<ChatMessage>> {
        let conversation = self.conversation(user, conversation_id).await?;
        let messages = self.messages(user, conversation_id).await?;
        let mut prompt = Vec::new();
        if let Some(character_id) = &conversation.character_id {
            // A character unpublished (or deleted) since leaves the conversation without its prompt.
            if let Ok(character) = self.character(user, character_id).await {
                let me = self.user(user).await?;
                let system = character.system_text(&me.display_name);
                if !system.is_empty() {
                    prompt.push(ChatMessage {
                        role: "system".into(),
                        content: system,
                    });
                }
            }
        }
        if let Some(last) = last {
            let path = path_to(&messages, last);
            if path.last().map(|m| m.id.as_str()) != Some(last) {
                return Err(AppError::NotFound("message"));
            }
            prompt.extend(path.into_iter().map(|m| ChatMessage {
                role: m.role.as_str().into(),
                content: m.content.clone(),
            }));
        }
        Ok(prompt)
    }

    /// Marks `message_id` as the kept one among its siblings. For a reply, records a preference
    /// of it over each finished sibling (replacing what an earlier choice in this group recorded).
    pub async fn choose(&self, user: &str, message_id: &str) -> Result<()> {
        let message = self.message(user, message_id).await?;
        let messages = self.messages(user, &message.conversation_id).await?;
        let siblings: Vec<&Message> = messages
            .iter()
            .filter(|m| m.parent_id == message.parent_id && m.id != message.id)
            .collect();
        let prompt = match &message.parent_id {
            Some(parent) => {
                self.prompt_messages(user, &message.conversation_id, Some(parent))
                    .await?
            }
            None => {
                self.prompt_messages(user, &message.conversation_id, None)
                    .await?
            }
        };
        let mut tx = self.pool.begin().await?;
        for m in &messages {
            if m.parent_id == message.parent_id {
                sqlx::query("UPDATE messages SET chosen = $1 WHERE id = $2")
                    .bind((m.id == message.id) as i64)
                    .bind(&m.id)
                    .execute(&mut *tx)
                    .await?;
            }
        }
        if message.role == Role::Assistant {
            sqlx::query(
                "DELETE FROM preferences WHERE owner_id = $1 AND conversation_id = $2 AND source = 'choose' AND chosen_message_id IN (SELECT id FROM messages WHERE conversation_id = $2 AND parent_id = $3)",
            )
            .bind(user)
            .bind(&message.conversation_id)
            .bind(message.parent_id.as_deref().unwrap_or(""))
            .execute(&mut *tx)
            .await?;
            for sibling in siblings.iter().filter(|s| {
                s.role == Role::Assistant
                    && matches!(s.status, Status::Complete | Status::Stopped)
                    && !s.content.trim().is_empty()
            }) {
                self.insert_preference(
                    &mut tx,
                    user,
                    &message,
                    "choose",
                    &prompt,
                    (&message.id, &message.content),
                    (&sibling.id, &sibling.content),
                )
                .await?;
            }
        }
        tx.commit().await?;
        Ok(())
    }

    /// Adds `content` as a sibling of `message_id` (the edit branches). An edited reply is
    /// recorded as a preference of the edit over the original.
    pub async fn edit_message(
        &self,
        user: &str,
        message_id: &str,
        content: &str,
    ) -> Result<Message> {
        let original = self.message(user, message_id).await?;
        if original.role == Role::System {
            return Err(AppError::BadInput(
                "system messages cannot be edited".into(),
            ));
        }
        if content.trim().is_empty() {
            return Err(AppError::BadInput("the edited text is empty".into()));
        }
        let edited = self
            .add_message(
                user,
                &original.conversation_id,
                original.parent_id.as_deref(),
                original.role,
                content,
                Status::Complete,
                original.model.as_deref(),
            )
            .await?;
        if original.role == Role::Assistant && original.content != content {
            let prompt = self
                .prompt_messages(
                    user,
                    &original.conversation_id,
                    original.parent_id.as_deref(),
                )
                .await?;
            let mut tx = self.pool.begin().await?;
            self.insert_preference(
                &mut tx,
                user,
                &original,
                "edit",
                &prompt,
                (&edited.id, &edited.content),
                (&original.id, &original.content),
            )
            .await?;
            tx.commit().await?;
        }
        Ok(edited)
    }

    #[allow(clippy::too_many_arguments)]
    async fn insert_preference(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Any>,
        user: &str,
        message: &Message,
        source: &str,
        prompt: &[ChatMessage],
        chosen: (&str, &str),
        rejected: (&str, &str),
    ) -> Result<()> {
        let prompt = serde_json::to_string(prompt)
            .map_err(|e| AppError::Internal(format!("prompt snapshot: {e}")))?;
        sqlx::query(
            "INSERT INTO preferences (id, owner_id, conversation_id, parent_id, source, prompt, chosen, rejected, chosen_message_id, rejected_message_id, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        )
        .bind(new_id()?)
        .bind(user)
        .bind(&message.conversation_id)
        .bind(&message.parent_id)
        .bind(source)
        .bind(prompt)
        .bind(chosen.1)
        .bind(rejected.1)
        .bind(chosen.0)
        .bind(rejected.0)
        .bind(now_ms())
        .execute(&mut **tx)
        .await?;
        Ok(())
    }
}
