//! Thumbs up/down on a reply, with reason chips and an optional comment. Each rating keeps a
//! snapshot of the conversation up to the rated reply, so later edits do not change what was rated.

use crate::conversations::Role;
use crate::{check_len, now_ms, AppError, Result, Store};
use serde::{Deserialize, Serialize};

/// Reasons for a thumbs up.
pub const UP_REASONS: &[&str] = &[
    "accurate",
    "followed_instructions",
    "creative",
    "attention_to_detail",
    "thorough",
];
/// Reasons for a thumbs down.
pub const DOWN_REASONS: &[&str] = &[
    "style",
    "not_factual",
    "did_not_follow_instructions",
    "refused",
    "lazy",
    "other",
];

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Feedback {
    /// 1 (up) or -1 (down).
    pub rating: i64,
    pub reasons: Vec<String>,
    pub comment: Option<String>,
}

impl Feedback {
    fn check(&self) -> Result<()> {
        let allowed = match self.rating {
            1 => UP_REASONS,
            -1 => DOWN_REASONS,
            other => {
                return Err(AppError::BadInput(format!(
                    "rating must be 1 (up) or -1 (down), not {other}"
                )))
            }
        };
        for reason in &self.reasons {
            if !allowed.contains(&reason.as_str()) {
                return Err(AppError::BadInput(format!(
                    "'{reason}' is not a reason for a thumbs {}; use one of {}",
                    if self.rating == 1 { "up" } else { "down" },
                    allowed.join(", ")
                )));
            }
        }
        if let Some(comment) = &self.comment {
            check_len("comment", comment, 5000)?;
        }
        Ok(())
    }
}

impl Store {
    /// Rates a reply (replacing this person's earlier rating of it).
    pub async fn set_feedback(
        &self,
        user: &str,
        message_id: &str,
        mut feedback: Feedback,
    ) -> Result<Feedback> {
        feedback.check()?;
        feedback.reasons.sort();
        feedback.reasons.dedup();
        feedback.comment = feedback
            .comment
            .map(|c| c.trim().to_string())
            .filter(|c| !c.is_empty());
        let message = self.message(user, message_id).await?;
        if message.role != Role::Assistant {
            return Err(AppError::BadInput(
                "only replies (assistant messages) can be rated".into(),
            ));
        }
        let snapshot = self
            .prompt_messages(user, &message.conversation_id, Some(message_id))
            .await?;
        let snapshot = serde_json::to_string(&snapshot)
            .map_err(|e| AppError::Internal(format!("conversation snapshot: {e}")))?;
        let reasons = serde_json::to_string(&feedback.reasons)
            .map_err(|e| AppError::Internal(format!("feedback reasons: {e}")))?;
        sqlx::query(
            "INSERT INTO feedback (message_id, owner_id, rating, reasons, comment, snapshot, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT (message_id, owner_id) DO UPDATE SET
               rating = excluded.rating, reasons = excluded.reasons, comment = excluded.comment,
               snapshot = excluded.snapshot, created_at = excluded.created_at",
        )
        .bind(message_id)
        .bind(user)
        .bind(feedback.rating)
        .bind(reasons)
        .bind(&feedback.comment)
        .bind(snapshot)
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        Ok(feedback)
    }

    /// Removes this person's rating of the message.
    pub async fn delete_feedback(&self, user: &str, message_id: &str) -> Result<()> {
        self.message(user, message_id).await?;
        sqlx::query("DELETE FROM feedback WHERE message_id = $1 AND owner_id = $2")
            .bind(message_id)
            .bind(user)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}
