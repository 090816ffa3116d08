//! The store against SQLite, and PostgreSQL when `CONCH_TEST_DATABASE_URL` is set
//! (`scripts/start-postgres` prints one). Each test runs its body on every configured backend.

use conch_app::testing::{check_export_record, databases};
use conch_app::{
    card_from_png, AppError, CharacterFields, ExportFormat, Feedback, NewConversation, Role,
    Status, Store,
};
use serde_json::{json, Value};
use sqlx::Row;

async fn stores() -> Vec<(Store, conch_app::testing::TestDatabase)> {
    let mut all = Vec::new();
    for db in databases().await {
        let store = Store::open(&db.url)
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", db.backend));
        all.push((store, db));
    }
    all
}

/// An admin and a second, ordinary account.
async fn two_users(store: &Store) -> (String, String) {
    let admin = store
        .create_first_admin("alice", "correct horse", Some("Alice"))
        .await
        .unwrap();
    let bob = store
        .create_user(&admin.id, "bob", "battery staple", None, false)
        .await
        .unwrap();
    (admin.id, bob.id)
}

fn not_found<T: std::fmt::Debug>(r: Result<T, AppError>) {
    assert!(
        matches!(r, Err(AppError::NotFound(_))),
        "expected NotFound, got {r:?}"
    );
}

#[tokio::test]
async fn migrations_run_once_and_reopen() {
    for (store, db) in stores().await {
        let version = store.schema_version().await.unwrap();
        assert!(version >= 1);
        store.close().await;
        let again = Store::open(&db.url).await.unwrap();
        assert_eq!(again.schema_version().await.unwrap(), version);
        assert!(again.needs_admin().await.unwrap());
    }
}

#[tokio::test]
async fn sqlite_data_dir_uses_wal() {
    let dir = conch_app::testing::temp_dir("conch-wal");
    let store = Store::open_data_dir(&dir.join("nested")).await.unwrap();
    let mode: String = sqlx::query_scalar::<_, String>("PRAGMA journal_mode")
        .fetch_one(
            &sqlx::AnyPool::connect(&format!("sqlite://{}/nested/conch.db", dir.display()))
                .await
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(mode.to_lowercase(), "wal");
    assert!(dir.join("nested/conch.db").exists());
    store.close().await;
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn accounts_and_sessions() {
    for (store, db) in stores().await {
        assert!(store.needs_admin().await.unwrap());
        let (admin, bob) = two_users(&store).await;
        assert!(!store.needs_admin().await.unwrap());
        assert!(matches!(
            store.create_first_admin("mallory", "password1", None).await,
            Err(AppError::Forbidden(_))
        ));
        assert!(matches!(
            store
                .create_user(&bob, "carol", "password1", None, false)
                .await,
            Err(AppError::Forbidden(_))
        ));
        assert!(matches!(
            store
                .create_user(&admin, "BOB", "password1", None, false)
                .await,
            Err(AppError::Conflict(_))
        ));
        for (name, password) in [("", "password1"), ("a b", "password1"), ("ok", "short")] {
            assert!(matches!(
                store.create_user(&admin, name, password, None, false).await,
                Err(AppError::BadInput(_))
            ));
        }
        let users = store.list_users(&admin).await.unwrap();
        assert_eq!(
            users
                .iter()
                .map(|u| u.username.as_str())
                .collect::<Vec<_>>(),
            ["alice", "bob"]
        );
        assert!(users[0].is_admin && !users[1].is_admin);
        assert_eq!(users[0].display_name, "Alice");
        assert_eq!(users[1].display_name, "bob");
        assert!(matches!(
            store.list_users(&bob).await,
            Err(AppError::Forbidden(_))
        ));

        assert_eq!(
            store
                .verify_password("bob", "battery staple")
                .await
                .unwrap()
                .id,
            bob
        );
        for (name, password) in [("bob", "battery staplE"), ("nobody", "battery staple")] {
            assert!(matches!(
                store.verify_password(name, password).await,
                Err(AppError::BadCredentials)
            ));
        }

        let session = store.create_session(&bob).await.unwrap();
        assert!(session.token.len() >= 43, "256-bit token");
        let found = store.session(&session.token).await.unwrap().unwrap();
        assert_eq!(found.user.id, bob);
        assert_eq!(found.csrf_token, session.csrf_token);
        assert!(store.session("not a token").await.unwrap().is_none());
        // Only a hash of the token is stored, and the hashes and hashes of passwords are not the secrets.
        let raw = sqlx::AnyPool::connect(&db.url).await.unwrap();
        let stored: Vec<String> = sqlx::query("SELECT token_hash FROM sessions")
            .fetch_all(&raw)
            .await
            .unwrap()
            .iter()
            .map(|r| r.get::<String, _>(0))
            .collect();
        assert!(!stored.contains(&session.token));
        let hash: String = sqlx::query("SELECT password_hash FROM users WHERE id = $1")
            .bind(&bob)
            .fetch_one(&raw)
            .await
            .unwrap()
            .get(0);
        assert!(hash.starts_with("$argon2id$"), "{hash}");
        raw.close().await;
        store.delete_session(&session.token).await.unwrap();
        assert!(store.session(&session.token).await.unwrap().is_none());

        assert!(matches!(
            store.delete_user(&admin, &admin).await,
            Err(AppError::BadInput(_))
        ));
        assert!(matches!(
            store.delete_user(&bob, &admin).await,
            Err(AppError::Forbidden(_))
        ));
        let c = store
            .create_conversation(&bob, NewConversation::default())
            .await
            .unwrap();
        store.delete_user(&admin, &bob).await.unwrap();
        not_found(store.user(&bob).await);
        assert!(store
            .list_conversations(&bob, None)
            .await
            .unwrap()
            .is_empty());
        not_found(store.conversation(&bob, &c.id).await);
    }
}

#[tokio::test]
async fn conversation_tree_branches_and_choices() {
    for (store, _db) in stores().await {
        let (a, _) = two_users(&store).await;
        let c = store
            .create_conversation(&a, NewConversation::default())
            .await
            .unwrap();
        assert_eq!(c.title, "");
        assert_eq!(store.current_leaf(&a, &c.id).await.unwrap(), None);
        let q = store
            .add_message(
                &a,
                &c.id,
                None,
                Role::User,
                "What is  a conch?",
                Status::Complete,
                None,
            )
            .await
            .unwrap();
        assert_eq!(
            store.conversation(&a, &c.id).await.unwrap().title,
            "What is a conch?"
        );
        let r1 = store
            .add_message(
                &a,
                &c.id,
                Some(&q.id),
                Role::Assistant,
                "A shell.",
                Status::Complete,
                Some("m"),
            )
            .await
            .unwrap();
        let r2 = store
            .add_message(
                &a,
                &c.id,
                Some(&q.id),
                Role::Assistant,
                "A sea snail.",
                Status::Complete,
                Some("m"),
            )
            .await
            .unwrap();
        // The newest sibling is the chosen one and ends the branch.
        assert_eq!(
            store.current_leaf(&a, &c.id).await.unwrap().as_deref(),
            Some(r2.id.as_str())
        );
        let all = store.messages(&a, &c.id).await.unwrap();
        assert_eq!(
            all.iter().map(|m| m.chosen).collect::<Vec<_>>(),
            [true, false, true]
        );

        store.choose(&a, &r1.id).await.unwrap();
        assert_eq!(
            store.current_leaf(&a, &c.id).await.unwrap().as_deref(),
            Some(r1.id.as_str())
        );
        store.choose(&a, &r1.id).await.unwrap(); // choosing again records the pair once

        let edited = store
            .edit_message(&a, &r1.id, "A large sea snail's shell.")
            .await
            .unwrap();
        assert_eq!(edited.parent_id.as_deref(), Some(q.id.as_str()));
        assert_eq!(edited.role, Role::Assistant);
        assert_eq!(
            store.current_leaf(&a, &c.id).await.unwrap().as_deref(),
            Some(edited.id.as_str())
        );

        // Editing the question branches: a sibling of the question, with its own future.
        let q2 = store
            .edit_message(&a, &q.id, "What is a whelk?")
            .await
            .unwrap();
        assert_eq!(q2.parent_id, None);
        assert_eq!(
            store.current_leaf(&a, &c.id).await.unwrap().as_deref(),
            Some(q2.id.as_str())
        );
        let prompt = store
            .prompt_messages(&a, &c.id, Some(&edited.id))
            .await
            .unwrap();
        assert_eq!(
            prompt
                .iter()
                .map(|m| (m.role.as_str(), m.content.as_str()))
                .collect::<Vec<_>>(),
            [
                ("user", "What is  a conch?"),
                ("assistant", "A large sea snail's shell.")
            ]
        );

        let pairs = store
            .export_household(ExportFormat::TrlPreference)
            .await
            .unwrap();
        let pairs: Vec<Value> = pairs
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let summary: Vec<(&str, &str)> = pairs
            .iter()
            .map(|p| {
                (
                    p["chosen"][0]["content"].as_str().unwrap(),
                    p["rejected"][0]["content"].as_str().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                ("A shell.", "A sea snail."),
                ("A large sea snail's shell.", "A shell.")
            ]
        );
        for p in &pairs {
            assert_eq!(
                p["prompt"],
                json!([{ "role": "user", "content": "What is  a conch?" }])
            );
        }

        // Search covers titles and message text, case-insensitively, with LIKE's wildcards literal.
        let other = store
            .create_conversation(
                &a,
                NewConversation {
                    title: Some("Recipes 100%".into()),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        let ids =
            |list: Vec<conch_app::Conversation>| list.into_iter().map(|c| c.id).collect::<Vec<_>>();
        assert_eq!(
            ids(store
                .list_conversations(&a, Some("SEA SNAIL"))
                .await
                .unwrap()),
            std::slice::from_ref(&c.id)
        );
        assert_eq!(
            ids(store.list_conversations(&a, Some("0%")).await.unwrap()),
            std::slice::from_ref(&other.id)
        );
        assert!(store
            .list_conversations(&a, Some("_%"))
            .await
            .unwrap()
            .is_empty());
        assert_eq!(store.list_conversations(&a, None).await.unwrap().len(), 2);

        let renamed = store
            .rename_conversation(&a, &c.id, "  Shells ")
            .await
            .unwrap();
        assert_eq!(renamed.title, "Shells");
        store.delete_conversation(&a, &c.id).await.unwrap();
        not_found(store.conversation(&a, &c.id).await);
        not_found(store.message(&a, &q.id).await);
        assert!(store
            .export_household(ExportFormat::TrlPreference)
            .await
            .unwrap()
            .is_empty());
    }
}

#[tokio::test]
async fn interrupted_replies_become_stopped_with_their_text() {
    for (store, _db) in stores().await {
        let (a, _) = two_users(&store).await;
        let c = store
            .create_conversation(&a, NewConversation::default())
            .await
            .unwrap();
        let q = store
            .add_message(&a, &c.id, None, Role::User, "hi", Status::Complete, None)
            .await
            .unwrap();
        let r = store
            .add_message(
                &a,
                &c.id,
                Some(&q.id),
                Role::Assistant,
                "",
                Status::Streaming,
                None,
            )
            .await
            .unwrap();
        store
            .save_reply(&a, &r.id, "Hel", Status::Streaming)
            .await
            .unwrap();
        assert_eq!(store.stop_interrupted_replies().await.unwrap(), 1);
        let r = store.message(&a, &r.id).await.unwrap();
        assert_eq!((r.content.as_str(), r.status), ("Hel", Status::Stopped));
        assert_eq!(store.stop_interrupted_replies().await.unwrap(), 0);
    }
}

#[tokio::test]
async fn one_person_cannot_reach_anothers_data() {
    for (store, _db) in stores().await {
        let (a, b) = two_users(&store).await;
        let character = store
            .create_character(
                &a,
                CharacterFields {
                    name: "Secret".into(),
                    greeting: "Hi".into(),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        let c = store
            .create_conversation(
                &a,
                NewConversation {
                    character_id: Some(character.id.clone()),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        let greeting = &store.messages(&a, &c.id).await.unwrap()[0];
        assert_eq!(
            (greeting.role, greeting.content.as_str()),
            (Role::Assistant, "Hi")
        );
        let q = store
            .add_message(
                &a,
                &c.id,
                Some(&greeting.id),
                Role::User,
                "secret",
                Status::Complete,
                None,
            )
            .await
            .unwrap();
        let r = store
            .add_message(
                &a,
                &c.id,
                Some(&q.id),
                Role::Assistant,
                "reply",
                Status::Complete,
                None,
            )
            .await
            .unwrap();
        store
            .set_feedback(
                &a,
                &r.id,
                Feedback {
                    rating: 1,
                    reasons: vec![],
                    comment: None,
                },
            )
            .await
            .unwrap();

        not_found(store.conversation(&b, &c.id).await);
        not_found(store.messages(&b, &c.id).await);
        not_found(store.rename_conversation(&b, &c.id, "x").await);
        not_found(store.delete_conversation(&b, &c.id).await);
        not_found(store.message(&b, &r.id).await);
        not_found(
            store
                .add_message(&b, &c.id, None, Role::User, "x", Status::Complete, None)
                .await,
        );
        not_found(store.save_reply(&b, &r.id, "x", Status::Complete).await);
        not_found(store.choose(&b, &r.id).await);
        not_found(store.edit_message(&b, &r.id, "x").await);
        not_found(
            store
                .set_feedback(
                    &b,
                    &r.id,
                    Feedback {
                        rating: -1,
                        reasons: vec![],
                        comment: None,
                    },
                )
                .await,
        );
        not_found(store.delete_feedback(&b, &r.id).await);
        not_found(store.prompt_messages(&b, &c.id, Some(&r.id)).await);
        not_found(store.current_leaf(&b, &c.id).await);
        // B's own conversation cannot hang messages under A's.
        let bc = store
            .create_conversation(&b, NewConversation::default())
            .await
            .unwrap();
        not_found(
            store
                .add_message(
                    &b,
                    &bc.id,
                    Some(&r.id),
                    Role::User,
                    "x",
                    Status::Complete,
                    None,
                )
                .await,
        );
        // An unpublished character is invisible; a published one is readable but not B's to change.
        not_found(store.character(&b, &character.id).await);
        not_found(
            store
                .create_conversation(
                    &b,
                    NewConversation {
                        character_id: Some(character.id.clone()),
                        ..Default::default()
                    },
                )
                .await,
        );
        not_found(store.copy_character(&b, &character.id).await);
        not_found(store.publish_character(&b, &character.id, true).await);
        store
            .publish_character(&a, &character.id, true)
            .await
            .unwrap();
        assert_eq!(
            store.character(&b, &character.id).await.unwrap().name,
            "Secret"
        );
        not_found(
            store
                .update_character(
                    &b,
                    &character.id,
                    CharacterFields {
                        name: "Mine".into(),
                        ..Default::default()
                    },
                )
                .await,
        );
        not_found(store.delete_character(&b, &character.id).await);
        not_found(
            store
                .set_avatar(&b, &character.id, b"\x89PNG\r\n\x1a\n")
                .await,
        );
        not_found(store.publish_character(&b, &character.id, false).await);
        let copy = store.copy_character(&b, &character.id).await.unwrap();
        assert_eq!(
            (copy.owner_id.as_str(), copy.published),
            (b.as_str(), false)
        );
        assert_eq!(store.list_characters(&b).await.unwrap().len(), 2);
        assert_eq!(store.list_characters(&a).await.unwrap().len(), 1);

        // Nothing of A's changed.
        let after = store.messages(&a, &c.id).await.unwrap();
        assert_eq!(after.len(), 3);
        assert_eq!(after[2].content, "reply");
        assert_eq!(after[2].feedback.as_ref().unwrap().rating, 1);
        assert_eq!(
            store.character(&a, &character.id).await.unwrap().name,
            "Secret"
        );
    }
}

#[tokio::test]
async fn feedback_keeps_a_snapshot_and_checks_reasons() {
    for (store, _db) in stores().await {
        let (a, _) = two_users(&store).await;
        let c = store
            .create_conversation(&a, NewConversation::default())
            .await
            .unwrap();
        let q = store
            .add_message(&a, &c.id, None, Role::User, "2+2?", Status::Complete, None)
            .await
            .unwrap();
        let r = store
            .add_message(
                &a,
                &c.id,
                Some(&q.id),
                Role::Assistant,
                "5",
                Status::Complete,
                None,
            )
            .await
            .unwrap();
        for (rating, reasons) in [
            (1, vec!["lazy"]),
            (-1, vec!["accurate"]),
            (0, vec![]),
            (2, vec![]),
        ] {
            let reasons = reasons.into_iter().map(String::from).collect();
            assert!(matches!(
                store
                    .set_feedback(
                        &a,
                        &r.id,
                        Feedback {
                            rating,
                            reasons,
                            comment: None
                        }
                    )
                    .await,
                Err(AppError::BadInput(_))
            ));
        }
        assert!(matches!(
            store
                .set_feedback(
                    &a,
                    &q.id,
                    Feedback {
                        rating: 1,
                        reasons: vec![],
                        comment: None
                    }
                )
                .await,
            Err(AppError::BadInput(_))
        ));
        store
            .set_feedback(
                &a,
                &r.id,
                Feedback {
                    rating: 1,
                    reasons: vec!["accurate".into()],
                    comment: None,
                },
            )
            .await
            .unwrap();
        let f = store
            .set_feedback(
                &a,
                &r.id,
                Feedback {
                    rating: -1,
                    reasons: vec!["not_factual".into(), "lazy".into()],
                    comment: Some(" wrong ".into()),
                },
            )
            .await
            .unwrap();
        assert_eq!(
            f,
            Feedback {
                rating: -1,
                reasons: vec!["lazy".into(), "not_factual".into()],
                comment: Some("wrong".into())
            }
        );
        assert_eq!(store.message(&a, &r.id).await.unwrap().feedback, Some(f));
        // A later edit does not change what was rated.
        store.edit_message(&a, &r.id, "4").await.unwrap();
        let kto = store.export_household(ExportFormat::TrlKto).await.unwrap();
        let rows: Vec<Value> = kto
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(
            rows,
            [
                json!({ "prompt": [{ "role": "user", "content": "2+2?" }], "completion": [{ "role": "assistant", "content": "5" }], "label": false })
            ]
        );
        store.delete_feedback(&a, &r.id).await.unwrap();
        assert_eq!(store.message(&a, &r.id).await.unwrap().feedback, None);
        assert!(store
            .export_household(ExportFormat::TrlKto)
            .await
            .unwrap()
            .is_empty());
    }
}

#[tokio::test]
async fn exports_have_each_formats_fields() {
    for (store, _db) in stores().await {
        let (a, b) = two_users(&store).await;
        let character = store
            .create_character(
                &b,
                CharacterFields {
                    name: "Tutor".into(),
                    system_prompt: "Teach {{user}}.".into(),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        let c = store
            .create_conversation(
                &b,
                NewConversation {
                    character_id: Some(character.id),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        let q = store
            .add_message(
                &b,
                &c.id,
                None,
                Role::User,
                "Explain tides.",
                Status::Complete,
                None,
            )
            .await
            .unwrap();
        let r1 = store
            .add_message(
                &b,
                &c.id,
                Some(&q.id),
                Role::Assistant,
                "The moon.",
                Status::Complete,
                None,
            )
            .await
            .unwrap();
        let r2 = store
            .add_message(
                &b,
                &c.id,
                Some(&q.id),
                Role::Assistant,
                "Gravity of moon and sun.",
                Status::Complete,
                None,
            )
            .await
            .unwrap();
        store.choose(&b, &r2.id).await.unwrap();
        store
            .set_feedback(
                &b,
                &r2.id,
                Feedback {
                    rating: 1,
                    reasons: vec!["thorough".into()],
                    comment: None,
                },
            )
            .await
            .unwrap();
        store
            .set_feedback(
                &b,
                &r1.id,
                Feedback {
                    rating: -1,
                    reasons: vec!["lazy".into()],
                    comment: None,
                },
            )
            .await
            .unwrap();
        store
            .edit_message(&b, &r1.id, "The moon's pull.")
            .await
            .unwrap();

        assert!(matches!(
            store.export_as(&b, ExportFormat::OpenAiSft).await,
            Err(AppError::Forbidden(_))
        ));
        let expected_counts = [
            (ExportFormat::TrlPreference, 2),
            (ExportFormat::TrlKto, 2),
            (ExportFormat::OpenAiSft, 2),
            (ExportFormat::OpenAiPreference, 2),
        ];
        for (format, count) in expected_counts {
            assert_eq!(format.name().parse::<ExportFormat>().unwrap(), format);
            let text = store.export_as(&a, format).await.unwrap();
            assert!(text.ends_with('\n'));
            let records: Vec<Value> = text
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect();
            assert_eq!(records.len(), count, "{}", format.name());
            for r in &records {
                check_export_record(format, r).unwrap();
                // The character's system prompt, with the person's name, is what the model read.
                let first = match format {
                    ExportFormat::TrlPreference | ExportFormat::TrlKto => &r["prompt"][0],
                    ExportFormat::OpenAiSft => &r["messages"][0],
                    ExportFormat::OpenAiPreference => &r["input"]["messages"][0],
                };
                assert_eq!(first["role"], "system");
                assert!(first["content"].as_str().unwrap().starts_with("Teach bob."));
            }
        }
        assert!("csv".parse::<ExportFormat>().is_err());
    }
}

#[tokio::test]
async fn cards_round_trip_through_the_store() {
    for (store, _db) in stores().await {
        let (a, b) = two_users(&store).await;
        let card = json!({
            "spec": "chara_card_v2", "spec_version": "2.0",
            "data": {
                "name": "Captain", "description": "d", "personality": "p", "scenario": "s",
                "first_mes": "Ahoy, {{user}}!", "mes_example": "e", "creator_notes": "n",
                "system_prompt": "sp", "post_history_instructions": "ph", "alternate_greetings": ["Yo"],
                "tags": ["sea"], "creator": "c", "character_version": "1",
                "extensions": { "talkativeness": "0.5", "app": { "nested": [1, { "x": null }] } }
            }
        });
        let imported = store
            .import_card_json(&a, card.to_string().as_bytes())
            .await
            .unwrap();
        assert_eq!(imported.greeting, "Ahoy, {{user}}!");
        assert!(!imported.has_avatar);
        assert_eq!(
            store.character(&a, &imported.id).await.unwrap().card(),
            card
        );
        let png = store.card_png(&a, &imported.id).await.unwrap();
        let (fields, _) = card_from_png(&png).unwrap();
        assert_eq!(
            fields.extensions,
            card["data"]["extensions"].as_object().unwrap().clone()
        );

        // The PNG imports as a new character whose avatar is the PNG, and exports the same card.
        let again = store.import_card_png(&b, &png).await.unwrap();
        assert!(again.has_avatar);
        assert_eq!(again.card(), card);
        let (avatar, kind) = store.avatar(&b, &again.id).await.unwrap().unwrap();
        assert_eq!(
            (avatar.as_slice(), kind.as_str()),
            (png.as_slice(), "image/png")
        );
        let conversation = store
            .create_conversation(
                &b,
                NewConversation {
                    character_id: Some(again.id.clone()),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        assert_eq!(
            store.messages(&b, &conversation.id).await.unwrap()[0].content,
            "Ahoy, bob!"
        );

        // Editing keeps the card fields Conch has no column for.
        let mut fields = again.fields();
        fields.name = "Admiral".into();
        let updated = store.update_character(&b, &again.id, fields).await.unwrap();
        assert_eq!(updated.card()["data"]["alternate_greetings"], json!(["Yo"]));
        assert_eq!(updated.card()["data"]["name"], "Admiral");

        assert!(matches!(
            store.import_card_json(&a, b"{").await,
            Err(AppError::BadInput(_))
        ));
        assert!(matches!(
            store.import_card_png(&a, b"\x89PNG\r\n\x1a\nxx").await,
            Err(AppError::BadInput(_))
        ));
        assert!(matches!(
            store.set_avatar(&a, &imported.id, b"GIF89a").await,
            Err(AppError::BadInput(_))
        ));
        let big = [&[0xff, 0xd8, 0xff][..], &vec![0; 5 << 20]].concat();
        assert!(matches!(
            store.set_avatar(&a, &imported.id, &big).await,
            Err(AppError::BadInput(_))
        ));
        store
            .set_avatar(&a, &imported.id, &[0xff, 0xd8, 0xff, 0xe0])
            .await
            .unwrap();
        assert_eq!(
            store.avatar(&a, &imported.id).await.unwrap().unwrap().1,
            "image/jpeg"
        );
        // A JPEG avatar cannot carry the card, so the PNG card is a placeholder image.
        assert_eq!(
            card_from_png(&store.card_png(&a, &imported.id).await.unwrap())
                .unwrap()
                .0
                .name,
            "Captain"
        );
    }
}
