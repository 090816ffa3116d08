//! The interviewer policy: one question at a time, follow-ups drawn from what was just said,
//! moving on when a topic is exhausted, resuming where the last session stopped.
//!
//! Everything is a pure function of the plan and the stored transcripts, so the same call,
//! [`next_step`], decides what to do after an answer and where to pick up days later.
//!
//! A chapter is worked through *threads*: a starter question from the plan followed by up to
//! [`InterviewPolicy::max_follow_ups`] model-written follow-ups. A thread ends when:
//! - the model judged the topic exhausted ([`InterviewTurn::topic_exhausted`], set by the caller
//!   from [`parse_topic_judgement`]),
//! - the last answer declines ("that's all", "I don't remember", "没有了", …) and is short,
//! - the last answer was a short reply to a follow-up (a short reply to a starter question still
//!   gets one follow-up: people often start briefly), or
//! - the follow-up limit is reached.
//!
//! A chapter ends when it is closed by the family, all its starter questions have had their
//! thread, or it holds [`InterviewPolicy::max_answers_per_chapter`] answers.

use serde::{Deserialize, Serialize};

use crate::plan::{MemoirPlan, PlanChapter};
use crate::text::{padded_lowercase_words, spoken_size, strip_thinking};
use crate::{ChatMessage, MemoirError, Result};

/// What a question in the transcript was.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum TurnKind {
    /// A starter question of the plan.
    Starter { question_id: String },
    /// A follow-up written by the model.
    FollowUp,
}

/// One question asked and the teller's answer (empty while unanswered).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InterviewTurn {
    #[serde(flatten)]
    pub kind: TurnKind,
    pub question: String,
    #[serde(default)]
    pub answer: String,
    /// Set when the model judged, after this answer, that the topic had nothing more to give.
    #[serde(default)]
    pub topic_exhausted: bool,
}

/// A chapter's interview so far.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ChapterTranscript {
    pub chapter_id: String,
    pub turns: Vec<InterviewTurn>,
    /// Set by the family (or the teller) to skip the rest of the chapter.
    #[serde(default)]
    pub closed: bool,
}

/// The numbers behind the move-on rules.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InterviewPolicy {
    /// Follow-ups after one starter question at most.
    pub max_follow_ups: usize,
    /// Answers in one chapter at most; then the interview moves to the next chapter.
    pub max_answers_per_chapter: usize,
    /// An answer under this many words (a Han character counts half) is short.
    pub short_answer_words: f32,
    /// A declining phrase ends a thread only in an answer up to this many words, so that
    /// "I don't remember exactly, but …" followed by a story does not.
    pub declining_answer_max_words: f32,
    /// Turns of the chapter shown to the model when asking for a follow-up (the latest ones).
    pub context_turns: usize,
}

impl Default for InterviewPolicy {
    fn default() -> Self {
        Self {
            max_follow_ups: 3,
            max_answers_per_chapter: 16,
            short_answer_words: 4.0,
            declining_answer_max_words: 12.0,
            context_turns: 8,
        }
    }
}

/// What the interviewer does next.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "step", rename_all = "snake_case")]
pub enum InterviewStep {
    /// Ask this starter question of the plan.
    AskStarter {
        chapter_id: String,
        question_id: String,
        question: String,
    },
    /// The last question of this chapter was never answered: ask it again.
    RepeatQuestion {
        chapter_id: String,
        question: String,
    },
    /// Ask the model for a follow-up ([`follow_up_messages`]) and ask that.
    AskFollowUp { chapter_id: String },
    /// Every chapter of the plan is done.
    Finished,
}

/// What the model thinks of the current topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TopicJudgement {
    /// Another follow-up would likely bring out more.
    More,
    /// Time to move on.
    Done,
}

/// The next step, from the plan (in the family's chapter order) and the stored transcripts.
/// Transcripts of chapters no longer in the plan are ignored.
pub fn next_step(
    plan: &MemoirPlan,
    transcripts: &[ChapterTranscript],
    policy: &InterviewPolicy,
) -> Result<InterviewStep> {
    for chapter in &plan.chapters {
        let mut matching = transcripts
            .iter()
            .filter(|transcript| transcript.chapter_id == chapter.id);
        let transcript = matching.next();
        if matching.next().is_some() {
            return Err(MemoirError::Interview(format!(
                "chapter {:?} has more than one transcript",
                chapter.id
            )));
        }
        if let Some(step) = chapter_step(chapter, transcript, policy) {
            return Ok(step);
        }
    }
    Ok(InterviewStep::Finished)
}

fn chapter_step(
    chapter: &PlanChapter,
    transcript: Option<&ChapterTranscript>,
    policy: &InterviewPolicy,
) -> Option<InterviewStep> {
    let empty = Vec::new();
    let turns = transcript.map_or(&empty, |transcript| &transcript.turns);
    if transcript.is_some_and(|transcript| transcript.closed) {
        return None;
    }
    if let Some(last) = turns.last() {
        if last.answer.trim().is_empty() {
            return Some(InterviewStep::RepeatQuestion {
                chapter_id: chapter.id.clone(),
                question: last.question.clone(),
            });
        }
    }
    if turns.len() >= policy.max_answers_per_chapter {
        return None;
    }
    if !turns.is_empty() && !thread_exhausted(turns, policy) {
        return Some(InterviewStep::AskFollowUp {
            chapter_id: chapter.id.clone(),
        });
    }
    let asked = |question_id: &str| {
        turns.iter().any(
            |turn| matches!(&turn.kind, TurnKind::Starter { question_id: id } if id == question_id),
        )
    };
    chapter
        .questions
        .iter()
        .find(|question| !asked(&question.id))
        .map(|question| InterviewStep::AskStarter {
            chapter_id: chapter.id.clone(),
            question_id: question.id.clone(),
            question: question.text.clone(),
        })
}

/// Whether the thread the last turn belongs to has nothing more to give (see the module docs).
fn thread_exhausted(turns: &[InterviewTurn], policy: &InterviewPolicy) -> bool {
    let Some(last) = turns.last() else {
        return true;
    };
    let follow_ups = turns
        .iter()
        .rev()
        .take_while(|turn| turn.kind == TurnKind::FollowUp)
        .count();
    let answer_size = spoken_size(&last.answer);
    last.topic_exhausted
        || follow_ups >= policy.max_follow_ups
        || (answer_size <= policy.declining_answer_max_words && declines(&last.answer))
        || (last.kind == TurnKind::FollowUp && answer_size < policy.short_answer_words)
}

const DECLINING_ENGLISH: &[&str] = &[
    "nothing more",
    "nothing else",
    "that's all",
    "that is all",
    "that's it",
    "that is it",
    "no more",
    "i don't remember",
    "i do not remember",
    "i can't remember",
    "i cannot remember",
    "don't recall",
    "i don't know",
    "i do not know",
    "move on",
    "next question",
    "skip",
    "rather not",
    "not talk about",
    "let's stop",
];

const DECLINING_CHINESE: &[&str] = &[
    "没有了",
    "没了",
    "就这些",
    "就这样",
    "就这么多",
    "不记得",
    "记不清",
    "记不得",
    "想不起来",
    "忘了",
    "不知道",
    "没什么",
    "下一个",
    "跳过",
    "换个",
    "不想说",
    "不想谈",
    "算了",
];

/// Whether an answer says the teller has nothing more on this topic. Both languages' phrases are
/// checked, since tellers switch.
fn declines(answer: &str) -> bool {
    let words = padded_lowercase_words(answer);
    DECLINING_ENGLISH
        .iter()
        .any(|phrase| words.contains(&format!(" {phrase} ")))
        || DECLINING_CHINESE
            .iter()
            .any(|phrase| answer.contains(phrase))
}

/// The chat messages asking the model for ONE short follow-up question to the last answer of
/// `transcript`, in the teller's language. Parse the reply with [`parse_follow_up`].
pub fn follow_up_messages(
    plan: &MemoirPlan,
    transcript: &ChapterTranscript,
    policy: &InterviewPolicy,
) -> Result<Vec<ChatMessage>> {
    let chapter = plan.chapter(&transcript.chapter_id)?;
    let last = answered_last_turn(transcript)?;
    let teller = teller_or_default(plan);
    let language = plan.language.english_name();
    let system = format!(
        "You are a warm, patient interviewer helping {teller} tell their life story for a family \
         memoir book. You ask exactly ONE short follow-up question, in {language}. Build it on \
         something {teller} just said: a person's name, a place, a feeling, or a concrete scene \
         (who was there, what it looked, sounded or smelled like, what happened next). Ask about \
         one thing only. Do not repeat a question already asked, do not summarise, comment or \
         praise, and do not invent anything {teller} did not mention. Reply with the question \
         alone, in {language}."
    );
    let mut user = format!("Chapter: {}\n\nThe interview so far:\n", chapter.title);
    let shown = transcript
        .turns
        .len()
        .saturating_sub(policy.context_turns.max(1));
    for turn in &transcript.turns[shown..transcript.turns.len() - 1] {
        user.push_str(&format!(
            "Q: {}\nA: {}\n",
            turn.question.trim(),
            turn.answer.trim()
        ));
    }
    user.push_str(&format!(
        "\nThe last question was: {}\n{teller} just answered: {}\n\nWrite the one follow-up \
         question now, in {language}.",
        last.question.trim(),
        last.answer.trim()
    ));
    Ok(vec![ChatMessage::system(system), ChatMessage::user(user)])
}

/// The chat messages asking the model whether the current topic is exhausted. Parse the reply
/// with [`parse_topic_judgement`] and store a `Done` as [`InterviewTurn::topic_exhausted`].
pub fn topic_judgement_messages(
    plan: &MemoirPlan,
    transcript: &ChapterTranscript,
) -> Result<Vec<ChatMessage>> {
    let chapter = plan.chapter(&transcript.chapter_id)?;
    answered_last_turn(transcript)?;
    let teller = teller_or_default(plan);
    let system = format!(
        "You help an interviewer decide when to move on. Reply with one word only: MORE if \
         another follow-up question about the current topic would likely bring out new memories \
         from {teller}, or DONE if the topic is exhausted (short or repeated answers, nothing new, \
         or {teller} wants to move on)."
    );
    let thread_start = transcript
        .turns
        .iter()
        .rposition(|turn| matches!(turn.kind, TurnKind::Starter { .. }))
        .unwrap_or(0);
    let mut user = format!("Chapter: {}\n\nThe current topic:\n", chapter.title);
    for turn in &transcript.turns[thread_start..] {
        user.push_str(&format!(
            "Q: {}\nA: {}\n",
            turn.question.trim(),
            turn.answer.trim()
        ));
    }
    user.push_str("\nMORE or DONE?");
    Ok(vec![ChatMessage::system(system), ChatMessage::user(user)])
}

fn answered_last_turn(transcript: &ChapterTranscript) -> Result<&InterviewTurn> {
    match transcript.turns.last() {
        Some(turn) if !turn.answer.trim().is_empty() => Ok(turn),
        Some(_) => Err(MemoirError::Interview(format!(
            "the last question of chapter {:?} has no answer yet",
            transcript.chapter_id
        ))),
        None => Err(MemoirError::Interview(format!(
            "chapter {:?} has no answered question to follow up",
            transcript.chapter_id
        ))),
    }
}

fn teller_or_default(plan: &MemoirPlan) -> &str {
    match plan.teller_name.trim() {
        "" => "the teller",
        name => name,
    }
}

/// The follow-up question in a model reply: drops a thinking block, labels ("Question:",
/// "追问："), list markers, quotes and emphasis, and keeps the first question only.
pub fn parse_follow_up(reply: &str) -> Result<String> {
    const LABELS: &[&str] = &[
        "follow-up question",
        "follow-up",
        "followup",
        "question",
        "interviewer",
        "q",
        "追问",
        "问题",
        "问",
    ];
    let reply = strip_thinking(reply);
    let line = reply
        .lines()
        .map(str::trim)
        .find(|line| !line.is_empty())
        .ok_or_else(|| MemoirError::ModelReply("the follow-up reply is empty".into()))?;
    let mut question = line.trim_start_matches(['-', '*', '#', '>', ' ']).trim();
    for label in LABELS {
        let head = question.get(..label.len());
        if head.is_some_and(|head| head.eq_ignore_ascii_case(label)) {
            if let Some(after) = question[label.len()..]
                .trim_start()
                .strip_prefix([':', '：'])
            {
                question = after.trim();
                break;
            }
        }
    }
    let question = question.trim_matches(|c: char| "\"'“”‘’「」『』*_` ".contains(c));
    let end = question
        .char_indices()
        .find(|&(_, c)| c == '?' || c == '？')
        .map_or(question.len(), |(index, c)| index + c.len_utf8());
    let question = question[..end].trim();
    if question.is_empty() {
        return Err(MemoirError::ModelReply(format!(
            "no question found in the follow-up reply {reply:?}"
        )));
    }
    if question.chars().count() > 300 {
        return Err(MemoirError::ModelReply(
            "the follow-up question is over 300 characters".into(),
        ));
    }
    Ok(question.to_string())
}

/// The judgement in a model reply, read robustly: the first of MORE / DONE (also "NOT DONE",
/// "move on", JSON such as `{"done": true}`, and 继续 / 完 / 结束) wins; `None` when the reply
/// says neither, so the caller falls back on the count rules.
pub fn parse_topic_judgement(reply: &str) -> Option<TopicJudgement> {
    let reply = strip_thinking(reply);
    let words = padded_lowercase_words(reply);
    let cues: &[(&str, TopicJudgement)] = &[
        (" not done ", TopicJudgement::More),
        (" not exhausted ", TopicJudgement::More),
        (" done true ", TopicJudgement::Done),
        (" done false ", TopicJudgement::More),
        (" more ", TopicJudgement::More),
        (" continue ", TopicJudgement::More),
        (" done ", TopicJudgement::Done),
        (" move on ", TopicJudgement::Done),
        (" exhausted ", TopicJudgement::Done),
        (" next ", TopicJudgement::Done),
    ];
    let english = cues
        .iter()
        .filter_map(|(cue, judgement)| words.find(cue).map(|at| (at, cue.len(), *judgement)))
        // Earliest cue first; at the same place the longer cue ("not done" over "not") wins.
        .min_by_key(|&(at, len, _)| (at, std::cmp::Reverse(len)));
    if let Some((_, _, judgement)) = english {
        return Some(judgement);
    }
    let chinese: &[(&str, TopicJudgement)] = &[
        ("没完", TopicJudgement::More),
        ("继续", TopicJudgement::More),
        ("还有", TopicJudgement::More),
        ("完成", TopicJudgement::Done),
        ("结束", TopicJudgement::Done),
        ("下一个", TopicJudgement::Done),
        ("完", TopicJudgement::Done),
    ];
    chinese
        .iter()
        .filter_map(|(cue, judgement)| reply.find(cue).map(|at| (at, *judgement)))
        .min_by_key(|&(at, _)| at)
        .map(|(_, judgement)| judgement)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn starter(id: &str, question: &str, answer: &str) -> InterviewTurn {
        InterviewTurn {
            kind: TurnKind::Starter {
                question_id: id.into(),
            },
            question: question.into(),
            answer: answer.into(),
            topic_exhausted: false,
        }
    }

    fn follow_up(question: &str, answer: &str) -> InterviewTurn {
        InterviewTurn {
            kind: TurnKind::FollowUp,
            question: question.into(),
            answer: answer.into(),
            topic_exhausted: false,
        }
    }

    fn small_plan() -> MemoirPlan {
        MemoirPlan::from_json(
            r#"{"teller_name":"Walter","language":"en","chapters":[
                {"id":"childhood","title":"Childhood","questions":[
                    {"id":"q1","text":"Where were you born?"},{"id":"q2","text":"What did you play?"}]},
                {"id":"work","title":"Work","questions":[{"id":"q1","text":"What was your first job?"}]}]}"#,
        )
        .unwrap()
    }

    const LONG_ANSWER: &str = "We lived in Leeds above my uncle Harold's bakery, and every morning the whole flat smelled of bread.";

    #[test]
    fn a_fresh_interview_starts_with_the_first_starter_question() {
        let step = next_step(&small_plan(), &[], &InterviewPolicy::default()).unwrap();
        assert_eq!(
            step,
            InterviewStep::AskStarter {
                chapter_id: "childhood".into(),
                question_id: "q1".into(),
                question: "Where were you born?".into()
            }
        );
    }

    #[test]
    fn a_rich_answer_gets_a_follow_up_until_the_limit() {
        let policy = InterviewPolicy::default();
        let mut transcript = ChapterTranscript {
            chapter_id: "childhood".into(),
            turns: vec![starter("q1", "Where were you born?", LONG_ANSWER)],
            closed: false,
        };
        for _ in 0..policy.max_follow_ups {
            let step =
                next_step(&small_plan(), std::slice::from_ref(&transcript), &policy).unwrap();
            assert_eq!(
                step,
                InterviewStep::AskFollowUp {
                    chapter_id: "childhood".into()
                }
            );
            transcript
                .turns
                .push(follow_up("What was the bakery like?", LONG_ANSWER));
        }
        let step = next_step(&small_plan(), &[transcript], &policy).unwrap();
        assert!(
            matches!(step, InterviewStep::AskStarter { ref question_id, .. } if question_id == "q2"),
            "{step:?}"
        );
    }

    #[test]
    fn declining_short_and_judged_answers_move_on() {
        let policy = InterviewPolicy::default();
        let plan = small_plan();
        let moved_on = |last: InterviewTurn| {
            let transcript = ChapterTranscript {
                chapter_id: "childhood".into(),
                turns: vec![starter("q1", "Where were you born?", LONG_ANSWER), last],
                closed: false,
            };
            matches!(
                next_step(&plan, &[transcript], &policy).unwrap(),
                InterviewStep::AskStarter { .. }
            )
        };
        assert!(moved_on(follow_up(
            "And then?",
            "That's all I remember about it."
        )));
        assert!(moved_on(follow_up("然后呢？", "没有了，就这些。")));
        assert!(moved_on(follow_up("Who?", "My aunt.")));
        let mut judged = follow_up("What did it smell like?", LONG_ANSWER);
        judged.topic_exhausted = true;
        assert!(moved_on(judged));
        // A long story that only begins with "I don't remember" keeps the thread going.
        assert!(!moved_on(follow_up(
            "What year?",
            "I don't remember the year, but I remember the snow that winter, the coal cart, and my brother Tom pulling me on a sledge down Hill Street."
        )));
        assert!(!moved_on(follow_up("Who?", LONG_ANSWER)));
    }

    #[test]
    fn a_short_first_answer_still_gets_one_follow_up() {
        let transcript = ChapterTranscript {
            chapter_id: "childhood".into(),
            turns: vec![starter("q1", "Where were you born?", "In Leeds.")],
            closed: false,
        };
        let step = next_step(&small_plan(), &[transcript], &InterviewPolicy::default()).unwrap();
        assert_eq!(
            step,
            InterviewStep::AskFollowUp {
                chapter_id: "childhood".into()
            }
        );
    }

    #[test]
    fn resume_repeats_an_unanswered_question_and_follows_the_family_order() {
        let mut plan = small_plan();
        let unanswered = ChapterTranscript {
            chapter_id: "childhood".into(),
            turns: vec![
                starter("q1", "Where were you born?", LONG_ANSWER),
                follow_up("Which street?", " "),
            ],
            closed: false,
        };
        let step = next_step(
            &plan,
            std::slice::from_ref(&unanswered),
            &InterviewPolicy::default(),
        )
        .unwrap();
        assert_eq!(
            step,
            InterviewStep::RepeatQuestion {
                chapter_id: "childhood".into(),
                question: "Which street?".into()
            }
        );

        // The family moved "work" first: the interview goes there although childhood is open.
        plan.move_chapter("work", 0).unwrap();
        let step = next_step(&plan, &[unanswered], &InterviewPolicy::default()).unwrap();
        assert!(
            matches!(step, InterviewStep::AskStarter { ref chapter_id, .. } if chapter_id == "work"),
            "{step:?}"
        );
    }

    #[test]
    fn closed_full_and_finished_chapters_are_passed() {
        let plan = small_plan();
        let policy = InterviewPolicy {
            max_answers_per_chapter: 2,
            ..InterviewPolicy::default()
        };
        let childhood = ChapterTranscript {
            chapter_id: "childhood".into(),
            turns: vec![
                starter("q1", "Where?", LONG_ANSWER),
                follow_up("Then?", LONG_ANSWER),
            ],
            closed: false,
        };
        let step = next_step(&plan, std::slice::from_ref(&childhood), &policy).unwrap();
        assert!(
            matches!(step, InterviewStep::AskStarter { ref chapter_id, .. } if chapter_id == "work")
        );
        let work = ChapterTranscript {
            chapter_id: "work".into(),
            turns: vec![],
            closed: true,
        };
        assert_eq!(
            next_step(&plan, &[childhood.clone(), work], &policy).unwrap(),
            InterviewStep::Finished
        );
        let twice = next_step(&plan, &[childhood.clone(), childhood], &policy).unwrap_err();
        assert!(twice.to_string().contains("more than one transcript"));
    }

    #[test]
    fn follow_up_prompt_carries_language_last_answer_and_one_question_rule() {
        let plan = MemoirPlan::default_for("李奶奶", crate::Language::SimplifiedChinese);
        let transcript = ChapterTranscript {
            chapter_id: "childhood".into(),
            turns: vec![starter(
                "q1",
                "您是在哪里出生的？",
                "我是一九四八年在苏州出生的，家门口有一条小河。",
            )],
            closed: false,
        };
        let messages = follow_up_messages(&plan, &transcript, &InterviewPolicy::default()).unwrap();
        assert_eq!(messages.len(), 2);
        assert!(messages[0].content.contains("Simplified Chinese"));
        assert!(messages[0].content.contains("ONE short follow-up question"));
        assert!(messages[0].content.contains("李奶奶"));
        assert!(messages[1].content.contains("家门口有一条小河"));
        assert!(messages[1].content.contains("童年"));

        let mut unanswered = transcript.clone();
        unanswered.turns.push(follow_up("小河叫什么名字？", ""));
        assert!(follow_up_messages(&plan, &unanswered, &InterviewPolicy::default()).is_err());
        let unknown = ChapterTranscript {
            chapter_id: "nope".into(),
            ..transcript
        };
        assert!(topic_judgement_messages(&plan, &unknown)
            .unwrap_err()
            .to_string()
            .contains("nope"));
    }

    #[test]
    fn transcripts_and_steps_round_trip_through_json() {
        let transcript = ChapterTranscript {
            chapter_id: "childhood".into(),
            turns: vec![
                starter("q1", "Where?", "Leeds."),
                follow_up("Which street?", ""),
            ],
            closed: false,
        };
        let json = serde_json::to_string(&transcript).unwrap();
        assert!(
            json.contains(r#""kind":"starter","question_id":"q1""#),
            "{json}"
        );
        assert_eq!(
            serde_json::from_str::<ChapterTranscript>(&json).unwrap(),
            transcript
        );
        let stored = r#"{"chapter_id":"work","turns":[{"kind":"follow_up","question":"Who?"}]}"#;
        let read: ChapterTranscript = serde_json::from_str(stored).unwrap();
        assert_eq!(read.turns[0].answer, "");
        let step = InterviewStep::AskFollowUp {
            chapter_id: "work".into(),
        };
        assert_eq!(
            serde_json::to_string(&step).unwrap(),
            r#"{"step":"ask_follow_up","chapter_id":"work"}"#
        );
    }

    #[test]
    fn follow_up_replies_are_cleaned_to_one_question() {
        assert_eq!(
            parse_follow_up("Question: \"What was Harold like?\"").unwrap(),
            "What was Harold like?"
        );
        assert_eq!(
            parse_follow_up("<think>They mentioned Harold.</think>\n\n**What was Harold like?** And the bakery?").unwrap(),
            "What was Harold like?"
        );
        assert_eq!(
            parse_follow_up("追问：“那条小河叫什么名字？”您常去吗？").unwrap(),
            "那条小河叫什么名字？"
        );
        assert_eq!(
            parse_follow_up("- Quite a story. Who baked the bread").unwrap(),
            "Quite a story. Who baked the bread"
        );
        assert_eq!(
            parse_follow_up("İstanbul: then where did you go?").unwrap(),
            "İstanbul: then where did you go?"
        );
        assert!(parse_follow_up("  \n ").is_err());
        assert!(parse_follow_up("<think>hmm").is_err());
    }

    #[test]
    fn topic_judgements_are_parsed_robustly() {
        assert_eq!(parse_topic_judgement("DONE"), Some(TopicJudgement::Done));
        assert_eq!(parse_topic_judgement("more."), Some(TopicJudgement::More));
        assert_eq!(
            parse_topic_judgement("Not done yet, there is more"),
            Some(TopicJudgement::More)
        );
        assert_eq!(
            parse_topic_judgement("DONE — nothing more to ask"),
            Some(TopicJudgement::Done)
        );
        assert_eq!(
            parse_topic_judgement("{\"done\": true}"),
            Some(TopicJudgement::Done)
        );
        assert_eq!(
            parse_topic_judgement("<think>more?</think>Time to move on."),
            Some(TopicJudgement::Done)
        );
        assert_eq!(parse_topic_judgement("继续"), Some(TopicJudgement::More));
        assert_eq!(
            parse_topic_judgement("这个话题已经结束了"),
            Some(TopicJudgement::Done)
        );
        assert_eq!(parse_topic_judgement("I am not sure."), None);
    }
}
