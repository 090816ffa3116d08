//! Character Card V2 (`{"spec": "chara_card_v2", "spec_version": "2.0", "data": {...}}`), as JSON
//! or inside a PNG's `chara` tEXt chunk (base64 of the JSON). V3 cards (`ccv3` chunk) and flat V1
//! cards are read too. Fields Conch has no column for (creator notes, alternate greetings, a
//! character book, unknown keys) and every `extensions` key are kept and written back unchanged.

use crate::characters::CharacterFields;
use crate::png::{png_text_chunks, with_text_chunk};
use crate::{AppError, Result};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde_json::{json, Map, Value};

/// Card keys that map onto a Conch character field, as (card key, field).
const MAPPED: &[(&str, &str)] = &[
    ("name", "name"),
    ("description", "description"),
    ("personality", "personality"),
    ("scenario", "scenario"),
    ("first_mes", "greeting"),
    ("system_prompt", "system_prompt"),
    ("mes_example", "example_dialogue"),
];

/// A card's fields, and the rest of its `data` object to keep for export.
pub type ImportedCard = (CharacterFields, Map<String, Value>);

fn bad(message: impl Into<String>) -> AppError {
    AppError::BadInput(message.into())
}

/// Reads a card from its JSON.
pub fn card_from_json(card: &Value) -> Result<ImportedCard> {
    let object = card
        .as_object()
        .ok_or_else(|| bad("a character card must be a JSON object"))?;
    let data = match object.get("spec").and_then(Value::as_str) {
        Some("chara_card_v2") | Some("chara_card_v3") => object
            .get("data")
            .and_then(Value::as_object)
            .ok_or_else(|| bad("the card has no 'data' object"))?,
        Some(other) => return Err(bad(format!("unknown card spec '{other}'"))),
        // V1 cards are the flat object.
        None => object,
    };
    let mut extra = data.clone();
    let mut text = |key: &str| -> Result<String> {
        match extra.remove(key) {
            None | Some(Value::Null) => Ok(String::new()),
            Some(Value::String(s)) => Ok(s),
            Some(_) => Err(bad(format!("the card's '{key}' must be a string"))),
        }
    };
    let mut fields = CharacterFields {
        name: text("name")?,
        description: text("description")?,
        personality: text("personality")?,
        scenario: text("scenario")?,
        greeting: text("first_mes")?,
        system_prompt: text("system_prompt")?,
        example_dialogue: text("mes_example")?,
        ..CharacterFields::default()
    };
    fields.tags = match extra.remove("tags") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(tags)) => tags
            .into_iter()
            .map(|t| match t {
                Value::String(s) => Ok(s),
                _ => Err(bad("the card's 'tags' must be strings")),
            })
            .collect::<Result<_>>()?,
        Some(_) => return Err(bad("the card's 'tags' must be a list")),
    };
    fields.extensions = match extra.remove("extensions") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(e)) => e,
        Some(_) => return Err(bad("the card's 'extensions' must be an object")),
    };
    if fields.name.trim().is_empty() {
        return Err(bad("the card has no name"));
    }
    Ok((fields, extra))
}

/// Reads a card from a PNG's `chara` (V2) or else `ccv3` (V3) tEXt chunk.
pub fn card_from_png(png: &[u8]) -> Result<ImportedCard> {
    let chunks = png_text_chunks(png).map_err(|e| bad(e.to_string()))?;
    let text = ["chara", "ccv3"]
        .iter()
        .find_map(|key| chunks.iter().find(|(k, _)| k == key))
        .map(|(_, t)| t)
        .ok_or_else(|| bad("the PNG carries no character card (no 'chara' tEXt chunk)"))?;
    let compact: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    let json = STANDARD
        .decode(compact.as_bytes())
        .map_err(|e| bad(format!("the PNG's card is not valid base64: {e}")))?;
    let card: Value = serde_json::from_slice(&json)
        .map_err(|e| bad(format!("the PNG's card is not valid JSON: {e}")))?;
    card_from_json(&card)
}

/// The V2 card of `fields` with the kept `extra` keys.
pub(crate) fn card_json(fields: &CharacterFields, extra: &Map<String, Value>) -> Value {
    let mut data = extra.clone();
    for (key, default) in [
        ("creator_notes", json!("")),
        ("post_history_instructions", json!("")),
        ("alternate_greetings", json!([])),
        ("creator", json!("")),
        ("character_version", json!("")),
    ] {
        data.entry(key).or_insert(default);
    }
    let values = [
        &fields.name,
        &fields.description,
        &fields.personality,
        &fields.scenario,
        &fields.greeting,
        &fields.system_prompt,
        &fields.example_dialogue,
    ];
    for ((key, _), value) in MAPPED.iter().zip(values) {
        data.insert(key.to_string(), json!(value));
    }
    data.insert("tags".into(), json!(fields.tags));
    data.insert(
        "extensions".into(),
        Value::Object(fields.extensions.clone()),
    );
    json!({ "spec": "chara_card_v2", "spec_version": "2.0", "data": data })
}

/// `png` carrying `card` in its `chara` chunk.
pub(crate) fn card_png(png: &[u8], card: &Value) -> Result<Vec<u8>> {
    with_text_chunk(png, "chara", &STANDARD.encode(card.to_string()))
        .map_err(|e| AppError::Internal(format!("the avatar is not a usable PNG: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::png::solid_png;

    fn sample() -> Value {
        json!({
            "spec": "chara_card_v2", "spec_version": "2.0",
            "data": {
                "name": "Ada", "description": "A mathematician.", "personality": "curious",
                "scenario": "A salon.", "first_mes": "Hello, {{user}}.", "mes_example": "<START>",
                "creator_notes": "notes", "system_prompt": "Be Ada.",
                "post_history_instructions": "", "alternate_greetings": ["Hi."],
                "character_book": {"entries": [{"keys": ["engine"], "content": "analytical"}]},
                "tags": ["history"], "creator": "me", "character_version": "3",
                "extensions": {"depth_prompt": {"depth": 4, "prompt": "x"}, "someapp": [1, 2]},
                "future_field": {"kept": true}
            }
        })
    }

    #[test]
    fn json_round_trip_keeps_everything() {
        let card = sample();
        let (fields, extra) = card_from_json(&card).unwrap();
        assert_eq!(fields.name, "Ada");
        assert_eq!(fields.greeting, "Hello, {{user}}.");
        assert_eq!(fields.example_dialogue, "<START>");
        assert_eq!(fields.tags, vec!["history"]);
        assert_eq!(card_json(&fields, &extra), card);
    }

    #[test]
    fn png_round_trip_keeps_everything() {
        let card = sample();
        let png = card_png(&solid_png(8, [1, 2, 3]), &card).unwrap();
        let (fields, extra) = card_from_png(&png).unwrap();
        assert_eq!(card_json(&fields, &extra), card);
    }

    #[test]
    fn v1_cards_and_bad_cards() {
        let (fields, extra) =
            card_from_json(&json!({"name": "Old", "first_mes": "Hi", "description": "d"})).unwrap();
        assert_eq!(
            (fields.name.as_str(), fields.greeting.as_str()),
            ("Old", "Hi")
        );
        assert!(extra.is_empty());
        for card in [
            json!([1]),
            json!({"spec": "chara_card_v9", "data": {}}),
            json!({"spec": "chara_card_v2"}),
            json!({"spec": "chara_card_v2", "data": {"name": 5}}),
            json!({"spec": "chara_card_v2", "data": {"name": "x", "tags": "a"}}),
            json!({"spec": "chara_card_v2", "data": {"name": "x", "extensions": []}}),
            json!({"spec": "chara_card_v2", "data": {"name": " "}}),
        ] {
            let err = card_from_json(&card).unwrap_err();
            assert!(matches!(err, AppError::BadInput(_)), "{card}: {err}");
        }
        let plain = solid_png(2, [0, 0, 0]);
        assert!(card_from_png(&plain)
            .unwrap_err()
            .to_string()
            .contains("no character card"));
        let not_base64 = with_text_chunk(&plain, "chara", "***").unwrap();
        assert!(card_from_png(&not_base64)
            .unwrap_err()
            .to_string()
            .contains("base64"));
    }
}
