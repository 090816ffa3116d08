//! Throwaway databases for tests (this crate's and the server's): a SQLite file in a fresh
//! temporary directory, and, when `CONCH_TEST_DATABASE_URL` names a PostgreSQL server, a fresh
//! schema there. With `CONCH_REQUIRE_POSTGRES=1` a missing PostgreSQL URL is a failure, not a skip.

use crate::{random_bytes, ExportFormat};
use serde_json::{json, Value};
use sqlx::any::AnyPoolOptions;
use std::path::PathBuf;

/// One empty database; the SQLite directory is removed when this is dropped.
pub struct TestDatabase {
    pub url: String,
    pub backend: &'static str,
    dir: Option<PathBuf>,
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        if let Some(dir) = &self.dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

fn random_name() -> String {
    random_bytes::<8>()
        .expect("secure random numbers")
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A fresh, empty temporary directory (removed by the caller).
pub fn temp_dir(prefix: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("{prefix}-{}", random_name()));
    std::fs::create_dir_all(&dir).expect("creating a temporary directory");
    dir
}

pub async fn sqlite() -> TestDatabase {
    let dir = temp_dir("conch-app-test");
    TestDatabase {
        url: format!("sqlite://{}/conch.db?mode=rwc", dir.display()),
        backend: "sqlite",
        dir: Some(dir),
    }
}

/// The PostgreSQL server tests should use, if any.
pub fn postgres_url() -> Option<String> {
    let url = std::env::var("CONCH_TEST_DATABASE_URL")
        .ok()
        .filter(|u| !u.is_empty());
    if url.is_none() && std::env::var("CONCH_REQUIRE_POSTGRES").as_deref() == Ok("1") {
        panic!("CONCH_REQUIRE_POSTGRES=1 but CONCH_TEST_DATABASE_URL is not set; run scripts/start-postgres and export its URL");
    }
    url
}

/// A fresh schema on the test PostgreSQL server, if one is configured.
pub async fn postgres() -> Option<TestDatabase> {
    let base = postgres_url()?;
    sqlx::any::install_default_drivers();
    let schema = format!("conch_test_{}", random_name());
    let pool = AnyPoolOptions::new()
        .max_connections(1)
        .connect(&base)
        .await
        .unwrap_or_else(|e| panic!("cannot reach CONCH_TEST_DATABASE_URL: {e}"));
    sqlx::query(&format!("CREATE SCHEMA {schema}"))
        .execute(&pool)
        .await
        .expect("creating a test schema");
    pool.close().await;
    let separator = if base.contains('?') { '&' } else { '?' };
    Some(TestDatabase {
        url: format!("{base}{separator}options[search_path]={schema}"),
        backend: "postgres",
        dir: None,
    })
}

/// SQLite, and PostgreSQL when configured: run a storage test against each.
pub async fn databases() -> Vec<TestDatabase> {
    let mut all = vec![sqlite().await];
    all.extend(postgres().await);
    all
}

fn check_messages(value: &Value, what: &str) -> Result<(), String> {
    let list = value
        .as_array()
        .ok_or_else(|| format!("{what} is not a list"))?;
    if list.is_empty() {
        return Err(format!("{what} is empty"));
    }
    for m in list {
        let role = m["role"]
            .as_str()
            .ok_or_else(|| format!("{what}: a role is not a string"))?;
        if !["system", "user", "assistant"].contains(&role) {
            return Err(format!("{what}: unknown role {role}"));
        }
        if !m["content"].is_string() {
            return Err(format!("{what}: a content is not a string"));
        }
    }
    Ok(())
}

fn expect(condition: bool, what: &str) -> Result<(), String> {
    if condition {
        Ok(())
    } else {
        Err(what.to_string())
    }
}

/// Checks one exported record against its format's required fields and types, as the trainers
/// that read it (TRL's DPO and KTO trainers, OpenAI fine-tuning) expect them.
pub fn check_export_record(format: ExportFormat, r: &Value) -> Result<(), String> {
    let object = r.as_object().ok_or("a record is not a JSON object")?;
    let mut keys: Vec<&str> = object.keys().map(String::as_str).collect();
    keys.sort_unstable();
    let one_reply = |side: &str| -> Result<(), String> {
        check_messages(&r[side], side)?;
        expect(
            r[side].as_array().map(Vec::len) == Some(1),
            &format!("{side} is not one message"),
        )?;
        expect(
            r[side][0]["role"] == "assistant",
            &format!("{side} is not an assistant message"),
        )
    };
    match format {
        ExportFormat::TrlPreference => {
            expect(
                keys == ["chosen", "prompt", "rejected"],
                "keys are not prompt/chosen/rejected",
            )?;
            check_messages(&r["prompt"], "prompt")?;
            one_reply("chosen")?;
            one_reply("rejected")
        }
        ExportFormat::TrlKto => {
            expect(
                keys == ["completion", "label", "prompt"],
                "keys are not prompt/completion/label",
            )?;
            check_messages(&r["prompt"], "prompt")?;
            one_reply("completion")?;
            expect(r["label"].is_boolean(), "label is not a boolean")
        }
        ExportFormat::OpenAiSft => {
            expect(keys == ["messages"], "keys are not messages")?;
            check_messages(&r["messages"], "messages")?;
            let messages = r["messages"].as_array().ok_or("messages")?;
            expect(
                messages.last().is_some_and(|m| m["role"] == "assistant"),
                "the last message is not the assistant's",
            )?;
            expect(
                messages.iter().any(|m| m["role"] == "user"),
                "no user message",
            )
        }
        ExportFormat::OpenAiPreference => {
            expect(
                keys == ["input", "non_preferred_output", "preferred_output"],
                "keys are not input/preferred_output/non_preferred_output",
            )?;
            check_messages(&r["input"]["messages"], "input.messages")?;
            expect(
                r["input"]["tools"] == json!([]),
                "input.tools is not a list",
            )?;
            expect(
                r["input"]["parallel_tool_calls"].is_boolean(),
                "input.parallel_tool_calls is not a boolean",
            )?;
            one_reply("preferred_output")?;
            one_reply("non_preferred_output")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_export_checker_rejects_malformed_records() {
        let good = json!({ "prompt": [{ "role": "user", "content": "q" }], "completion": [{ "role": "assistant", "content": "a" }], "label": true });
        check_export_record(ExportFormat::TrlKto, &good).unwrap();
        let mut bad_label = good.clone();
        bad_label["label"] = json!(1);
        let mut bad_role = good.clone();
        bad_role["completion"][0]["role"] = json!("bot");
        let mut extra_key = good.clone();
        extra_key["score"] = json!(1);
        for bad in [bad_label, bad_role, extra_key, json!([])] {
            assert!(
                check_export_record(ExportFormat::TrlKto, &bad).is_err(),
                "{bad}"
            );
        }
        // A record of one format is not a record of another.
        for format in [
            ExportFormat::TrlPreference,
            ExportFormat::OpenAiSft,
            ExportFormat::OpenAiPreference,
        ] {
            assert!(check_export_record(format, &good).is_err());
        }
    }
}
