//! Training data from the household's feedback, as JSON Lines in the formats trainers read:
//! TRL preference (prompt/chosen/rejected, conversational), TRL unpaired for KTO
//! (prompt/completion/label), OpenAI supervised fine-tuning (`messages`) and OpenAI preference
//! fine-tuning (`input`/`preferred_output`/`non_preferred_output`).
//!
//! A kept regeneration or an edited reply is a preference pair (the kept or edited text is
//! chosen); a thumbs up or down is an unpaired label; a thumbs up, and an edited reply, are
//! examples for supervised fine-tuning. Prompts come from the snapshots stored with each record.

use crate::conversations::ChatMessage;
use crate::{AppError, Result, Store};
use serde_json::{json, Value};
use sqlx::Row;
use std::str::FromStr;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExportFormat {
    TrlPreference,
    TrlKto,
    OpenAiSft,
    OpenAiPreference,
}

impl ExportFormat {
    pub const ALL: [ExportFormat; 4] = [
        ExportFormat::TrlPreference,
        ExportFormat::TrlKto,
        ExportFormat::OpenAiSft,
        ExportFormat::OpenAiPreference,
    ];

    pub fn name(self) -> &'static str {
        match self {
            ExportFormat::TrlPreference => "trl-preference",
            ExportFormat::TrlKto => "trl-kto",
            ExportFormat::OpenAiSft => "openai-sft",
            ExportFormat::OpenAiPreference => "openai-preference",
        }
    }
}

impl FromStr for ExportFormat {
    type Err = AppError;

    fn from_str(s: &str) -> Result<ExportFormat> {
        ExportFormat::ALL
            .into_iter()
            .find(|f| f.name() == s)
            .ok_or_else(|| {
                AppError::BadInput(format!(
                    "unknown export format '{s}'; use one of {}",
                    ExportFormat::ALL.map(|f| f.name()).join(", ")
                ))
            })
    }
}

struct Pair {
    prompt: Vec<ChatMessage>,
    chosen: String,
    rejected: String,
}

struct Rated {
    /// The conversation up to and including the rated reply.
    snapshot: Vec<ChatMessage>,
    good: bool,
}

fn parse_messages(text: &str) -> Result<Vec<ChatMessage>> {
    serde_json::from_str(text).map_err(|e| {
        AppError::Internal(format!("a stored conversation snapshot is not valid: {e}"))
    })
}

fn assistant(content: &str) -> Value {
    json!([{ "role": "assistant", "content": content }])
}

impl Store {
    /// The household's training data in `format`, one JSON object per line (admin only).
    pub async fn export_as(&self, acting: &str, format: ExportFormat) -> Result<String> {
        self.require_admin(acting).await?;
        self.export_household(format).await
    }

    /// The household's training data in `format`, one JSON object per line, for someone with
    /// the database itself in hand (`conch export`).
    pub async fn export_household(&self, format: ExportFormat) -> Result<String> {
        let records: Vec<Value> = match format {
            ExportFormat::TrlPreference => self
                .pairs(false)
                .await?
                .into_iter()
                .map(|p| {
                    json!({ "prompt": p.prompt, "chosen": assistant(&p.chosen), "rejected": assistant(&p.rejected) })
                })
                .collect(),
            ExportFormat::OpenAiPreference => self
                .pairs(false)
                .await?
                .into_iter()
                .map(|p| {
                    json!({
                        "input": { "messages": p.prompt, "tools": [], "parallel_tool_calls": true },
                        "preferred_output": assistant(&p.chosen),
                        "non_preferred_output": assistant(&p.rejected),
                    })
                })
                .collect(),
            ExportFormat::TrlKto => self
                .rated()
                .await?
                .into_iter()
                .filter_map(|mut r| {
                    let reply = r.snapshot.pop()?;
                    Some(json!({ "prompt": r.snapshot, "completion": assistant(&reply.content), "label": r.good }))
                })
                .collect(),
            ExportFormat::OpenAiSft => {
                let liked = self.rated().await?.into_iter().filter(|r| r.good).map(|r| r.snapshot);
                let edited = self.pairs(true).await?.into_iter().map(|mut p| {
                    p.prompt.push(ChatMessage { role: "assistant".into(), content: p.chosen });
                    p.prompt
                });
                liked
                    .chain(edited)
                    .filter(|messages| messages.iter().any(|m| m.role == "user"))
                    .map(|messages| json!({ "messages": messages }))
                    .collect()
            }
        };
        let mut out = String::new();
        for record in records {
            out.push_str(&record.to_string());
            out.push('\n');
        }
        Ok(out)
    }

    async fn pairs(&self, edits_only: bool) -> Result<Vec<Pair>> {
        let sql = if edits_only {
            "SELECT prompt, chosen, rejected FROM preferences WHERE source = 'edit' ORDER BY created_at, id"
        } else {
            "SELECT prompt, chosen, rejected FROM preferences ORDER BY created_at, id"
        };
        let rows = sqlx::query(sql).fetch_all(&self.pool).await?;
        rows.iter()
            .map(|row| {
                Ok(Pair {
                    prompt: parse_messages(&row.try_get::<String, _>("prompt")?)?,
                    chosen: row.try_get("chosen")?,
                    rejected: row.try_get("rejected")?,
                })
            })
            .collect()
    }

    async fn rated(&self) -> Result<Vec<Rated>> {
        let rows =
            sqlx::query("SELECT snapshot, rating FROM feedback ORDER BY created_at, message_id")
                .fetch_all(&self.pool)
                .await?;
        rows.iter()
            .map(|row| {
                Ok(Rated {
                    snapshot: parse_messages(&row.try_get::<String, _>("snapshot")?)?,
                    good: row.try_get::<i64, _>("rating")? > 0,
                })
            })
            .collect()
    }
}
