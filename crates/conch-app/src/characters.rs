//! Characters: a persona (name, description, personality, scenario, greeting, system prompt,
//! example dialogue) a person chats with. The owner edits it; publishing puts it in the household
//! gallery, where the others may chat with it or copy it, but not change it.

use crate::card::{card_from_json, card_from_png, card_json, card_png, ImportedCard};
use crate::png::solid_png;
use crate::{check_len, new_id, now_ms, AppError, Result, Store};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sqlx::any::AnyRow;
use sqlx::Row;

/// Largest avatar image accepted.
pub const MAX_AVATAR: usize = 5 << 20;
const MAX_TEXT: usize = 50_000;

/// The fields a person writes (and a card carries).
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct CharacterFields {
    pub name: String,
    pub description: String,
    pub personality: String,
    pub scenario: String,
    pub greeting: String,
    pub system_prompt: String,
    pub example_dialogue: String,
    pub tags: Vec<String>,
    pub extensions: Map<String, Value>,
}

impl CharacterFields {
    fn check(&self) -> Result<()> {
        if self.name.trim().is_empty() {
            return Err(AppError::BadInput("a character needs a name".into()));
        }
        check_len("name", &self.name, 100)?;
        for (field, value) in [
            ("description", &self.description),
            ("personality", &self.personality),
            ("scenario", &self.scenario),
            ("greeting", &self.greeting),
            ("system_prompt", &self.system_prompt),
            ("example_dialogue", &self.example_dialogue),
        ] {
            check_len(field, value, MAX_TEXT)?;
        }
        if self.tags.len() > 50 {
            return Err(AppError::BadInput("at most 50 tags are allowed".into()));
        }
        for tag in &self.tags {
            check_len("a tag", tag, 50)?;
        }
        let extensions = Value::Object(self.extensions.clone()).to_string();
        if extensions.len() > 1 << 20 {
            return Err(AppError::BadInput(
                "extensions are larger than 1 MiB".into(),
            ));
        }
        Ok(())
    }
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Character {
    pub id: String,
    pub owner_id: String,
    pub name: String,
    pub description: String,
    pub personality: String,
    pub scenario: String,
    pub greeting: String,
    pub system_prompt: String,
    pub example_dialogue: String,
    pub tags: Vec<String>,
    pub published: bool,
    pub has_avatar: bool,
    pub extensions: Map<String, Value>,
    pub created_at: i64,
    pub updated_at: i64,
    /// Card fields without a column of their own, kept for export.
    #[serde(skip)]
    card_extra: Map<String, Value>,
}

const COLUMNS: &str = "id, owner_id, name, description, personality, scenario, greeting, system_prompt, example_dialogue, tags, extensions, card_extra, published, avatar_type, created_at, updated_at";

fn json_column<T: serde::de::DeserializeOwned>(row: &AnyRow, column: &str) -> Result<T> {
    let text: String = row.try_get(column)?;
    serde_json::from_str(&text)
        .map_err(|e| AppError::Internal(format!("stored character {column} is not valid: {e}")))
}

fn character_from_row(row: &AnyRow) -> Result<Character> {
    Ok(Character {
        id: row.try_get("id")?,
        owner_id: row.try_get("owner_id")?,
        name: row.try_get("name")?,
        description: row.try_get("description")?,
        personality: row.try_get("personality")?,
        scenario: row.try_get("scenario")?,
        greeting: row.try_get("greeting")?,
        system_prompt: row.try_get("system_prompt")?,
        example_dialogue: row.try_get("example_dialogue")?,
        tags: json_column(row, "tags")?,
        extensions: json_column(row, "extensions")?,
        card_extra: json_column(row, "card_extra")?,
        published: row.try_get::<i64, _>("published")? != 0,
        has_avatar: row.try_get::<Option<String>, _>("avatar_type")?.is_some(),
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

fn to_json(value: &impl Serialize) -> Result<String> {
    serde_json::to_string(value).map_err(|e| AppError::Internal(format!("encoding JSON: {e}")))
}

/// The image type of an avatar, from its first bytes.
fn image_type(bytes: &[u8]) -> Option<&'static str> {
    if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        Some("image/png")
    } else if bytes.starts_with(&[0xff, 0xd8, 0xff]) {
        Some("image/jpeg")
    } else {
        None
    }
}

impl Character {
    pub fn fields(&self) -> CharacterFields {
        CharacterFields {
            name: self.name.clone(),
            description: self.description.clone(),
            personality: self.personality.clone(),
            scenario: self.scenario.clone(),
            greeting: self.greeting.clone(),
            system_prompt: self.system_prompt.clone(),
            example_dialogue: self.example_dialogue.clone(),
            tags: self.tags.clone(),
            extensions: self.extensions.clone(),
        }
    }

    /// `text` with the card macros `{{char}}` and `{{user}}` filled in.
    pub fn fill_names(&self, text: &str, user_name: &str) -> String {
        text.replace("{{char}}", &self.name)
            .replace("{{Char}}", &self.name)
            .replace("<BOT>", &self.name)
            .replace("{{user}}", user_name)
            .replace("{{User}}", user_name)
            .replace("<USER>", user_name)
    }

    /// The system message that starts a conversation with this character.
    pub fn system_text(&self, user_name: &str) -> String {
        let mut parts = Vec::new();
        let system = self.system_prompt.trim();
        if system.is_empty() {
            parts.push(format!(
                "You are {}. Stay in character and write {}'s next reply.",
                self.name, self.name
            ));
        } else {
            parts.push(system.to_string());
        }
        for (label, value) in [
            ("", &self.description),
            ("Personality: ", &self.personality),
            ("Scenario: ", &self.scenario),
            ("Example dialogue:\n", &self.example_dialogue),
        ] {
            if !value.trim().is_empty() {
                parts.push(format!("{label}{}", value.trim()));
            }
        }
        self.fill_names(&parts.join("\n\n"), user_name)
    }

    /// The Character Card V2 JSON.
    pub fn card(&self) -> Value {
        card_json(&self.fields(), &self.card_extra)
    }
}

impl Store {
    /// The user's own characters, then the others' published ones, each by name.
    pub async fn list_characters(&self, user: &str) -> Result<Vec<Character>> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM characters WHERE owner_id = $1 OR published = 1
             ORDER BY CASE WHEN owner_id = $1 THEN 0 ELSE 1 END, LOWER(name), id"
        ))
        .bind(user)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(character_from_row).collect()
    }

    pub async fn create_character(&self, user: &str, fields: CharacterFields) -> Result<Character> {
        self.insert_character(user, fields, Map::new(), None).await
    }

    async fn insert_character(
        &self,
        user: &str,
        fields: CharacterFields,
        card_extra: Map<String, Value>,
        avatar: Option<&[u8]>,
    ) -> Result<Character> {
        fields.check()?;
        let avatar = match avatar {
            Some(bytes) => Some(check_avatar(bytes)?),
            None => None,
        };
        let id = new_id()?;
        let now = now_ms();
        sqlx::query(&format!(
            "INSERT INTO characters ({COLUMNS}, avatar) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, 0, $13, $14, $14, $15)"
        ))
        .bind(&id)
        .bind(user)
        .bind(fields.name.trim())
        .bind(&fields.description)
        .bind(&fields.personality)
        .bind(&fields.scenario)
        .bind(&fields.greeting)
        .bind(&fields.system_prompt)
        .bind(&fields.example_dialogue)
        .bind(to_json(&fields.tags)?)
        .bind(to_json(&fields.extensions)?)
        .bind(to_json(&card_extra)?)
        .bind(avatar.as_ref().map(|(kind, _)| *kind))
        .bind(now)
        .bind(avatar.map(|(_, data)| data))
        .execute(&self.pool)
        .await?;
        self.character(user, &id).await
    }

    /// A character the user may see: their own, or a published one.
    pub async fn character(&self, user: &str, id: &str) -> Result<Character> {
        let row = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM characters WHERE id = $1 AND (owner_id = $2 OR published = 1)"
        ))
        .bind(id)
        .bind(user)
        .fetch_optional(&self.pool)
        .await?
        .ok_or(AppError::NotFound("character"))?;
        character_from_row(&row)
    }

    /// A character the user owns (to change it). Someone else's answers NotFound, even when published.
    async fn own_character(&self, user: &str, id: &str) -> Result<Character> {
        let character = self.character(user, id).await?;
        if character.owner_id != user {
            return Err(AppError::NotFound("character"));
        }
        Ok(character)
    }

    pub async fn update_character(
        &self,
        user: &str,
        id: &str,
        fields: CharacterFields,
    ) -> Result<Character> {
        fields.check()?;
        self.own_character(user, id).await?;
        sqlx::query(
            "UPDATE characters SET name = $1, description = $2, personality = $3, scenario = $4, greeting = $5,
               system_prompt = $6, example_dialogue = $7, tags = $8, extensions = $9, updated_at = $10
             WHERE id = $11 AND owner_id = $12",
        )
        .bind(fields.name.trim())
        .bind(&fields.description)
        .bind(&fields.personality)
        .bind(&fields.scenario)
        .bind(&fields.greeting)
        .bind(&fields.system_prompt)
        .bind(&fields.example_dialogue)
        .bind(to_json(&fields.tags)?)
        .bind(to_json(&fields.extensions)?)
        .bind(now_ms())
        .bind(id)
        .bind(user)
        .execute(&self.pool)
        .await?;
        self.character(user, id).await
    }

    /// Deletes a character; conversations with it go on without its prompt.
    pub async fn delete_character(&self, user: &str, id: &str) -> Result<()> {
        self.own_character(user, id).await?;
        sqlx::query("DELETE FROM characters WHERE id = $1 AND owner_id = $2")
            .bind(id)
            .bind(user)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn publish_character(
        &self,
        user: &str,
        id: &str,
        published: bool,
    ) -> Result<Character> {
        self.own_character(user, id).await?;
        sqlx::query(
            "UPDATE characters SET published = $1, updated_at = $2 WHERE id = $3 AND owner_id = $4",
        )
        .bind(published as i64)
        .bind(now_ms())
        .bind(id)
        .bind(user)
        .execute(&self.pool)
        .await?;
        self.character(user, id).await
    }

    /// A copy, owned by the user and unpublished, of a character they may see.
    pub async fn copy_character(&self, user: &str, id: &str) -> Result<Character> {
        let original = self.character(user, id).await?;
        let avatar = self.avatar(user, id).await?.map(|(bytes, _)| bytes);
        self.insert_character(
            user,
            original.fields(),
            original.card_extra,
            avatar.as_deref(),
        )
        .await
    }

    /// Sets the avatar (PNG or JPEG, at most 5 MB) of the user's own character.
    pub async fn set_avatar(&self, user: &str, id: &str, image: &[u8]) -> Result<()> {
        let (kind, data) = check_avatar(image)?;
        self.own_character(user, id).await?;
        sqlx::query("UPDATE characters SET avatar = $1, avatar_type = $2, updated_at = $3 WHERE id = $4 AND owner_id = $5")
            .bind(data)
            .bind(kind)
            .bind(now_ms())
            .bind(id)
            .bind(user)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The avatar image and its MIME type, of a character the user may see.
    pub async fn avatar(&self, user: &str, id: &str) -> Result<Option<(Vec<u8>, String)>> {
        self.character(user, id).await?;
        let row = sqlx::query("SELECT avatar, avatar_type FROM characters WHERE id = $1")
            .bind(id)
            .fetch_one(&self.pool)
            .await?;
        let data: Option<String> = row.try_get("avatar")?;
        let kind: Option<String> = row.try_get("avatar_type")?;
        match (data, kind) {
            (Some(data), Some(kind)) => {
                let bytes = STANDARD.decode(data).map_err(|e| {
                    AppError::Internal(format!("a stored avatar is not valid base64: {e}"))
                })?;
                Ok(Some((bytes, kind)))
            }
            _ => Ok(None),
        }
    }

    /// Imports a Character Card (V2, V3 or V1) from JSON.
    pub async fn import_card_json(&self, user: &str, json: &[u8]) -> Result<Character> {
        let card: Value = serde_json::from_slice(json)
            .map_err(|e| AppError::BadInput(format!("the card is not valid JSON: {e}")))?;
        let (fields, extra): ImportedCard = card_from_json(&card)?;
        self.insert_character(user, fields, extra, None).await
    }

    /// Imports a PNG character card; the PNG becomes the avatar.
    pub async fn import_card_png(&self, user: &str, png: &[u8]) -> Result<Character> {
        let (fields, extra) = card_from_png(png)?;
        self.insert_character(user, fields, extra, Some(png)).await
    }

    /// The card as PNG: the avatar if it is a PNG, else a plain square, carrying the card JSON.
    pub async fn card_png(&self, user: &str, id: &str) -> Result<Vec<u8>> {
        let character = self.character(user, id).await?;
        let image = match self.avatar(user, id).await? {
            Some((bytes, kind)) if kind == "image/png" => bytes,
            _ => {
                let h = character
                    .name
                    .bytes()
                    .fold(0u32, |h, b| h.wrapping_mul(31).wrapping_add(b as u32));
                solid_png(
                    64,
                    [
                        (h >> 16) as u8 | 0x40,
                        (h >> 8) as u8 | 0x40,
                        h as u8 | 0x40,
                    ],
                )
            }
        };
        card_png(&image, &character.card())
    }
}

/// The MIME type and base64 text of an acceptable avatar.
fn check_avatar(bytes: &[u8]) -> Result<(&'static str, String)> {
    if bytes.len() > MAX_AVATAR {
        return Err(AppError::BadInput(format!(
            "the image is {} bytes; at most {MAX_AVATAR} are allowed",
            bytes.len()
        )));
    }
    let kind = image_type(bytes)
        .ok_or_else(|| AppError::BadInput("an avatar must be a PNG or JPEG image".into()))?;
    Ok((kind, STANDARD.encode(bytes)))
}
