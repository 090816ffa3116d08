//! The `conch` binary as a person or another tool uses it.

use std::path::PathBuf;
use std::process::{Command, Output};

fn conch(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_conch"))
        .args(args)
        .output()
        .expect("conch runs")
}

fn fixture(rel: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures")
        .join(rel)
        .display()
        .to_string()
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).expect("stdout is UTF-8")
}

fn stderr(o: &Output) -> String {
    String::from_utf8(o.stderr.clone()).expect("stderr is UTF-8")
}

/// A failure is one `error:` line naming the problem, a non-zero exit, and no panic.
fn assert_clean_failure(o: &Output, needle: &str) {
    let err = stderr(o);
    assert!(
        !o.status.success(),
        "expected failure, got success; stderr: {err}"
    );
    assert_eq!(o.status.code(), Some(1), "exit code; stderr: {err}");
    assert!(!err.contains("panicked"), "panic: {err}");
    assert!(err.starts_with("error: "), "stderr: {err}");
    assert!(
        err.to_lowercase().contains(&needle.to_lowercase()),
        "expected {needle:?} in: {err}"
    );
}

#[test]
fn logits_prints_one_row_per_position() {
    let model = fixture("models/qwen3/model.gguf");
    let o = conch(&["logits", "--model", &model, "--tokens", "1 5, 9 12"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    let rows = v["logits"].as_array().unwrap();
    assert_eq!(rows.len(), 4);
    let width = rows[0].as_array().unwrap().len();
    assert!(width > 100 && rows.iter().all(|r| r.as_array().unwrap().len() == width));
    assert!(rows
        .iter()
        .flat_map(|r| r.as_array().unwrap())
        .all(|x| x.as_f64().unwrap().is_finite()));
}

#[test]
fn logits_match_the_reference_through_the_cli() {
    // fixtures/models/*/reference.json holds the token ids transformers was run on (tools/gen_model_fixtures.py).
    let reference: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixture("models/llama_tied/reference.json")).unwrap(),
    )
    .unwrap();
    let ids: Vec<String> = reference["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.to_string())
        .collect();
    let o = conch(&[
        "logits",
        "--model",
        &fixture("models/llama_tied/model.gguf"),
        "--tokens",
        &ids.join(" "),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    let got: Vec<f32> = v["logits"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| {
            r.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap() as f32)
        })
        .collect();
    let want: Vec<f32> = std::fs::read(fixture("models/llama_tied/logits.f32"))
        .unwrap()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    assert_eq!(got.len(), want.len());
    let max = got
        .iter()
        .zip(&want)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(max <= 1e-4, "max abs diff {max}");
}

#[test]
fn tokenize_prints_a_json_array() {
    let o = conch(&[
        "tokenize",
        "--model",
        &fixture("models/qwen3/model.gguf"),
        "--text",
        "hello world",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let ids: Vec<u32> = serde_json::from_str(&stdout(&o)).unwrap();
    assert!(!ids.is_empty());
}

#[test]
fn inspect_shows_metadata_tensors_and_parameters() {
    let o = conch(&["inspect", &fixture("models/qwen3/model.gguf")]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("general.architecture = \"qwen3\""), "{out}");
    assert!(out.contains("token_embd.weight"), "{out}");
    assert!(out.contains("parameters: "), "{out}");
}

#[test]
fn bad_input_gives_one_clear_line() {
    let dir = std::env::temp_dir().join(format!("conch-cli-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let missing = dir.join("missing.gguf").display().to_string();
    assert_clean_failure(&conch(&["run", "--model", &missing, "hi"]), "no such file");

    let good = std::fs::read(fixture("models/qwen3/model.gguf")).unwrap();
    let truncated = dir.join("truncated.gguf");
    std::fs::write(&truncated, &good[..good.len() / 2]).unwrap();
    assert_clean_failure(
        &conch(&["run", "--model", truncated.to_str().unwrap(), "hi"]),
        "truncated.gguf",
    );

    let wrong_magic = dir.join("magic.gguf");
    let mut bytes = good.clone();
    bytes[..4].copy_from_slice(b"GGML");
    std::fs::write(&wrong_magic, &bytes).unwrap();
    assert_clean_failure(&conch(&["inspect", wrong_magic.to_str().unwrap()]), "magic");

    let text = dir.join("notes.txt");
    std::fs::write(&text, "not a model").unwrap();
    assert_clean_failure(
        &conch(&["tokenize", "--model", text.to_str().unwrap(), "--text", "x"]),
        "notes.txt",
    );

    let model = fixture("models/qwen3/model.gguf");
    assert_clean_failure(
        &conch(&["logits", "--model", &model, "--tokens", "1 two 3"]),
        "'two' is not a token id",
    );
    assert_clean_failure(
        &conch(&["logits", "--model", &model, "--tokens", "1 999999"]),
        "999999",
    );
    assert_clean_failure(
        &conch(&[
            "run",
            "--model",
            &model,
            "--raw",
            "--ctx",
            "4",
            "a long prompt that does not fit in four tokens at all",
        ]),
        "context",
    );
    assert_clean_failure(
        &conch(&["run", "--model", &model, "--raw", "--temperature=-1", "hi"]),
        "temperature",
    );
    std::fs::remove_dir_all(&dir).ok();
}

/// The default model, when the test command has fetched it (scripts/test does; set
/// CONCH_REQUIRE_REAL_MODELS=1 to make its absence a failure).
fn real_model(file: &str) -> Option<String> {
    let dir = std::env::var("CONCH_MODELS")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache/conch/models")
        });
    let path = dir.join(file);
    if path.exists() {
        return Some(path.display().to_string());
    }
    assert!(
        std::env::var("CONCH_REQUIRE_REAL_MODELS").is_err(),
        "{} is missing",
        path.display()
    );
    eprintln!(
        "skipping: {} not fetched (scripts/fetch-models)",
        path.display()
    );
    None
}

#[test]
fn the_default_model_answers_a_simple_question() {
    let Some(model) = real_model("SmolLM2-135M-Instruct.Q4_1.gguf") else {
        return;
    };
    let o = conch(&[
        "run",
        "--model",
        &model,
        "--temperature",
        "0",
        "--max-tokens",
        "40",
        "Name three fruits.",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let answer = stdout(&o).to_lowercase();
    let fruits = [
        "apple",
        "banana",
        "orange",
        "grape",
        "mango",
        "pear",
        "strawberr",
        "cherr",
        "peach",
        "lemon",
        "pineapple",
        "kiwi",
        "plum",
        "watermelon",
        "blueberr",
    ];
    let named = fruits.iter().filter(|f| answer.contains(*f)).count();
    // A 135M model at 4 bits names real fruits but not always three distinct ones.
    assert!(named >= 2, "expected fruits in: {answer}");
}

#[test]
fn inspect_reports_the_sparsity_of_moe_models() {
    let o = conch(&["inspect", &fixture("moe/qwen2_moe/model.gguf")]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    // fixtures/moe/README.md: 6 experts, top-4, a gated shared expert, 2 MoE layers.
    assert!(
        out.contains("experts: 6 per layer in 2 of 2 layers, 4 chosen per token"),
        "{out}"
    );
    let line = out
        .lines()
        .find(|l| l.starts_with("parameters (matrices"))
        .expect("parameter line");
    let nums: Vec<u64> = line
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    assert_eq!(nums.len(), 2, "{line}");
    assert!(
        nums[1] < nums[0],
        "active {} should be below total {}",
        nums[1],
        nums[0]
    );
}

#[test]
fn run_stats_counts_tokens_per_expert_per_layer() {
    let o = conch(&[
        "run",
        "--model",
        &fixture("moe/mixtral/model.gguf"),
        "--raw",
        "--temperature",
        "0",
        "--max-tokens",
        "6",
        "--stats",
        "a b c",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let err = stderr(&o);
    let rows: Vec<Vec<u64>> = err
        .lines()
        .filter_map(|l| l.split_once("tokens per expert] "))
        .map(|(_, counts)| {
            counts
                .split_whitespace()
                .map(|c| c.parse().unwrap())
                .collect()
        })
        .collect();
    // fixtures/moe/README.md: the Mixtral fixture has 2 layers of 8 experts with top-2 routing.
    assert_eq!(rows.len(), 2, "{err}");
    let prompt: u64 = err
        .split("[prompt ")
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .unwrap()
        .parse()
        .unwrap();
    let reply: u64 = err
        .split("reply ")
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .unwrap()
        .parse()
        .unwrap();
    // Every token that ran through the model (the prompt, and each reply token but the last) chose 2 experts.
    for row in rows {
        assert_eq!(row.len(), 8);
        assert_eq!(row.iter().sum::<u64>(), 2 * (prompt + reply - 1), "{err}");
    }
}

/// `conch export` reads the app's database and writes each training-data format, every record
/// checked against that format's required fields and types.
#[test]
fn export_writes_every_format_from_the_apps_data() {
    use conch_app::{ExportFormat, Feedback, NewConversation, Role, Status, Store};
    let dir = std::env::temp_dir().join(format!("conch-cli-export-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let store = Store::open_data_dir(&dir).await.unwrap();
        let admin = store
            .create_first_admin("grandpa", "correct horse battery", None)
            .await
            .unwrap();
        let conversation = store
            .create_conversation(&admin.id, NewConversation::default())
            .await
            .unwrap();
        let question = store
            .add_message(
                &admin.id,
                &conversation.id,
                None,
                Role::User,
                "Tell me a story",
                Status::Complete,
                None,
            )
            .await
            .unwrap();
        let reply = store
            .add_message(
                &admin.id,
                &conversation.id,
                Some(&question.id),
                Role::Assistant,
                "Once upon a time.",
                Status::Complete,
                Some("m"),
            )
            .await
            .unwrap();
        store
            .set_feedback(
                &admin.id,
                &reply.id,
                Feedback {
                    rating: 1,
                    reasons: vec!["creative".into()],
                    comment: None,
                },
            )
            .await
            .unwrap();
        // An edited reply is a preference of the edit over the original.
        store
            .edit_message(&admin.id, &reply.id, "Once upon a time, by the river.")
            .await
            .unwrap();
    });
    for format in [
        "trl-preference",
        "trl-kto",
        "openai-sft",
        "openai-preference",
    ] {
        let out = conch(&[
            "export",
            "--format",
            format,
            "--data-dir",
            &dir.display().to_string(),
        ]);
        assert!(out.status.success(), "{format}: {}", stderr(&out));
        let parsed: ExportFormat = format.parse().unwrap();
        let text = stdout(&out);
        let records: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{format}: {e}: {l}")))
            .collect();
        assert!(!records.is_empty(), "{format}: no records");
        for r in &records {
            conch_app::testing::check_export_record(parsed, r)
                .unwrap_or_else(|e| panic!("{format}: {e}: {r}"));
        }
    }
    let out = conch(&[
        "export",
        "--format",
        "csv",
        "--data-dir",
        &dir.display().to_string(),
    ]);
    assert_clean_failure(&out, "csv");
    let _ = std::fs::remove_dir_all(&dir);
}
