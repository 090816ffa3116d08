//! Memoir plans: one per teller, a list of life chapters each with starter questions.
//!
//! The family edits a plan (renames, reorders, adds chapters and questions); ids stay stable
//! through all of that so that stored transcripts keep pointing at the right chapter and question.

use serde::{Deserialize, Serialize};

use crate::{MemoirError, Result};

/// The language a teller is interviewed in and the book is written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Language {
    #[serde(rename = "en")]
    English,
    #[serde(rename = "zh-Hans")]
    SimplifiedChinese,
}

impl Language {
    /// The BCP 47 tag (`en`, `zh-Hans`), as used in EPUB and HTML `lang` attributes.
    pub fn tag(self) -> &'static str {
        match self {
            Language::English => "en",
            Language::SimplifiedChinese => "zh-Hans",
        }
    }

    /// The language's name as written in prompts to the model.
    pub fn english_name(self) -> &'static str {
        match self {
            Language::English => "English",
            Language::SimplifiedChinese => "Simplified Chinese (简体中文)",
        }
    }
}

/// A starter question of a chapter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanQuestion {
    /// Stable within its chapter; transcripts refer to it.
    pub id: String,
    pub text: String,
}

/// A chapter of the life story.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanChapter {
    /// Stable within the plan; transcripts refer to it.
    pub id: String,
    pub title: String,
    pub questions: Vec<PlanQuestion>,
}

/// A teller's memoir plan: the chapters in the order the family wants them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemoirPlan {
    /// How the interviewer and the book name the teller ("Grandma Li", "Walter").
    pub teller_name: String,
    pub language: Language,
    pub chapters: Vec<PlanChapter>,
}

/// One default chapter: id, English and Chinese title, and starter questions in both languages.
struct DefaultChapter {
    id: &'static str,
    title: [&'static str; 2],
    questions: &'static [[&'static str; 2]],
}

const DEFAULT_CHAPTERS: &[DefaultChapter] = &[
    DefaultChapter {
        id: "childhood",
        title: ["Childhood", "童年"],
        questions: &[
            [
                "Where and when were you born, and what have you been told about that day?",
                "您是哪一年、在哪里出生的？家里人跟您讲过您出生那天的事吗？",
            ],
            [
                "What is the earliest thing you remember?",
                "您记得的最早的一件事是什么？",
            ],
            [
                "What games did you play as a child, and who did you play with?",
                "小时候您玩些什么？都跟谁一起玩？",
            ],
            [
                "What did you want to be when you grew up?",
                "小时候您长大了想做什么？",
            ],
        ],
    },
    DefaultChapter {
        id: "parents-and-home",
        title: ["Parents and Home", "父母与家"],
        questions: &[
            [
                "Tell me about your mother. What was she like?",
                "跟我讲讲您的母亲吧，她是个什么样的人？",
            ],
            [
                "Tell me about your father. What did he do for a living?",
                "跟我讲讲您的父亲吧，他是做什么的？",
            ],
            [
                "Describe the house you grew up in, room by room.",
                "您小时候住的房子是什么样的？能一间一间讲讲吗？",
            ],
            [
                "What did your family eat on an ordinary day, and on holidays?",
                "平常日子家里吃什么？过年过节又吃什么？",
            ],
        ],
    },
    DefaultChapter {
        id: "school",
        title: ["School Days", "上学的日子"],
        questions: &[
            [
                "What was your first school like, and how did you get there?",
                "您上的第一所学校是什么样的？每天怎么去上学？",
            ],
            [
                "Which teacher do you remember best, and why?",
                "您印象最深的老师是哪一位？为什么？",
            ],
            [
                "Who were your friends at school?",
                "上学时您的好朋友都有谁？",
            ],
            [
                "When did your schooling end, and what came next?",
                "您上学上到什么时候？之后做了什么？",
            ],
        ],
    },
    DefaultChapter {
        id: "work",
        title: ["Work", "工作"],
        questions: &[
            [
                "What was your first job, and how did you get it?",
                "您的第一份工作是什么？是怎么找到的？",
            ],
            [
                "Describe an ordinary working day.",
                "能讲讲您平常一天是怎么工作的吗？",
            ],
            [
                "Who taught you the most at work?",
                "工作中谁教给您的东西最多？",
            ],
            ["What work are you proudest of?", "您最自豪的工作是哪一件？"],
        ],
    },
    DefaultChapter {
        id: "love-and-family",
        title: ["Love and Family", "爱情与家庭"],
        questions: &[
            [
                "How did you meet your husband or wife?",
                "您和老伴是怎么认识的？",
            ],
            ["Tell me about your wedding day.", "跟我讲讲您结婚那天吧。"],
            [
                "What do you remember about the day your first child was born?",
                "您第一个孩子出生那天，您还记得些什么？",
            ],
            [
                "What was home like when your children were small?",
                "孩子们小的时候，家里是什么样子的？",
            ],
        ],
    },
    DefaultChapter {
        id: "hard-times",
        title: ["Hard Times", "艰难岁月"],
        questions: &[
            [
                "What was the hardest time in your life?",
                "您这一生最难的一段日子是什么时候？",
            ],
            ["Who helped you through it?", "那时候是谁帮了您？"],
            ["What did that time teach you?", "那段日子让您明白了什么？"],
        ],
    },
    DefaultChapter {
        id: "places",
        title: ["Places", "走过的地方"],
        questions: &[
            [
                "Which places have you lived in, and which felt most like home?",
                "您在哪些地方住过？哪里最像家？",
            ],
            [
                "What is the farthest you have travelled, and what did you see there?",
                "您去过最远的地方是哪里？在那里看到了什么？",
            ],
            [
                "Is there a place you still dream about?",
                "有没有一个地方，您到现在还常常梦见？",
            ],
        ],
    },
    DefaultChapter {
        id: "beliefs",
        title: ["Beliefs", "信念"],
        questions: &[
            ["What do you believe in most?", "您最相信的是什么？"],
            [
                "Has what you believe changed over your life? What changed it?",
                "这些年您的想法变过吗？是什么让它变了？",
            ],
            [
                "What traditions mattered most in your family?",
                "您家里最看重哪些传统和规矩？",
            ],
        ],
    },
    DefaultChapter {
        id: "advice",
        title: ["Advice to Grandchildren", "给孙辈的话"],
        questions: &[
            [
                "What do you wish you had known when you were twenty?",
                "您希望自己二十岁时就懂得什么道理？",
            ],
            ["What makes a good life?", "您觉得怎样才算过好了一辈子？"],
            [
                "What would you like your grandchildren to remember about you?",
                "您希望孙辈们记住您什么？",
            ],
        ],
    },
];

impl MemoirPlan {
    /// The default plan: childhood, parents and home, school, work, love and family, hard times,
    /// places, beliefs, advice to grandchildren, each with a few starter questions.
    pub fn default_for(teller_name: impl Into<String>, language: Language) -> Self {
        let column = match language {
            Language::English => 0,
            Language::SimplifiedChinese => 1,
        };
        let chapters = DEFAULT_CHAPTERS
            .iter()
            .map(|chapter| PlanChapter {
                id: chapter.id.to_string(),
                title: chapter.title[column].to_string(),
                questions: chapter
                    .questions
                    .iter()
                    .enumerate()
                    .map(|(index, texts)| PlanQuestion {
                        id: format!("q{}", index + 1),
                        text: texts[column].to_string(),
                    })
                    .collect(),
            })
            .collect();
        Self {
            teller_name: teller_name.into(),
            language,
            chapters,
        }
    }

    /// Reads a plan from JSON and checks it ([`MemoirPlan::validate`]).
    pub fn from_json(json: &str) -> Result<Self> {
        let plan: Self = serde_json::from_str(json)?;
        plan.validate()?;
        Ok(plan)
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a plan is plain strings and always serializes")
    }

    /// Checks the plan can drive an interview: chapter ids unique and non-empty, titles and
    /// questions non-empty, question ids unique within their chapter.
    pub fn validate(&self) -> Result<()> {
        if self.chapters.is_empty() {
            return Err(MemoirError::Plan("the plan has no chapters".into()));
        }
        for (index, chapter) in self.chapters.iter().enumerate() {
            if chapter.id.trim().is_empty() {
                return Err(MemoirError::Plan(format!(
                    "chapter {} has an empty id",
                    index + 1
                )));
            }
            if self.chapters[..index]
                .iter()
                .any(|earlier| earlier.id == chapter.id)
            {
                return Err(MemoirError::Plan(format!(
                    "chapter id {:?} is used twice",
                    chapter.id
                )));
            }
            if chapter.title.trim().is_empty() {
                return Err(MemoirError::Plan(format!(
                    "chapter {:?} has an empty title",
                    chapter.id
                )));
            }
            for (q_index, question) in chapter.questions.iter().enumerate() {
                if question.id.trim().is_empty() || question.text.trim().is_empty() {
                    return Err(MemoirError::Plan(format!(
                        "question {} of chapter {:?} has an empty id or text",
                        q_index + 1,
                        chapter.id
                    )));
                }
                if chapter.questions[..q_index]
                    .iter()
                    .any(|earlier| earlier.id == question.id)
                {
                    return Err(MemoirError::Plan(format!(
                        "question id {:?} is used twice in chapter {:?}",
                        question.id, chapter.id
                    )));
                }
            }
        }
        Ok(())
    }

    pub fn chapter(&self, chapter_id: &str) -> Result<&PlanChapter> {
        self.chapters
            .iter()
            .find(|chapter| chapter.id == chapter_id)
            .ok_or_else(|| unknown_chapter(chapter_id))
    }

    fn chapter_mut(&mut self, chapter_id: &str) -> Result<&mut PlanChapter> {
        self.chapters
            .iter_mut()
            .find(|chapter| chapter.id == chapter_id)
            .ok_or_else(|| unknown_chapter(chapter_id))
    }

    /// Appends a chapter with a fresh id and returns that id.
    pub fn add_chapter(&mut self, title: &str) -> Result<String> {
        if title.trim().is_empty() {
            return Err(MemoirError::Plan("a new chapter needs a title".into()));
        }
        let id = fresh_id(
            "chapter-",
            self.chapters.iter().map(|chapter| chapter.id.as_str()),
        );
        self.chapters.push(PlanChapter {
            id: id.clone(),
            title: title.trim().to_string(),
            questions: Vec::new(),
        });
        Ok(id)
    }

    /// Removes a chapter. Its transcript, if any, is simply no longer visited by the interview.
    pub fn remove_chapter(&mut self, chapter_id: &str) -> Result<PlanChapter> {
        let index = self.chapter_index(chapter_id)?;
        Ok(self.chapters.remove(index))
    }

    pub fn rename_chapter(&mut self, chapter_id: &str, title: &str) -> Result<()> {
        if title.trim().is_empty() {
            return Err(MemoirError::Plan(format!(
                "chapter {chapter_id:?} cannot get an empty title"
            )));
        }
        self.chapter_mut(chapter_id)?.title = title.trim().to_string();
        Ok(())
    }

    /// Moves a chapter to `new_index` (0-based, counted after taking it out).
    pub fn move_chapter(&mut self, chapter_id: &str, new_index: usize) -> Result<()> {
        let index = self.chapter_index(chapter_id)?;
        if new_index >= self.chapters.len() {
            return Err(MemoirError::Plan(format!(
                "cannot move chapter {chapter_id:?} to position {new_index}: the plan has {} chapters",
                self.chapters.len()
            )));
        }
        let chapter = self.chapters.remove(index);
        self.chapters.insert(new_index, chapter);
        Ok(())
    }

    /// Appends a starter question to a chapter and returns its new id.
    pub fn add_question(&mut self, chapter_id: &str, text: &str) -> Result<String> {
        if text.trim().is_empty() {
            return Err(MemoirError::Plan(format!(
                "a new question for chapter {chapter_id:?} is empty"
            )));
        }
        let chapter = self.chapter_mut(chapter_id)?;
        let id = fresh_id(
            "q",
            chapter
                .questions
                .iter()
                .map(|question| question.id.as_str()),
        );
        chapter.questions.push(PlanQuestion {
            id: id.clone(),
            text: text.trim().to_string(),
        });
        Ok(id)
    }

    pub fn remove_question(&mut self, chapter_id: &str, question_id: &str) -> Result<PlanQuestion> {
        let chapter = self.chapter_mut(chapter_id)?;
        let index = chapter
            .questions
            .iter()
            .position(|question| question.id == question_id)
            .ok_or_else(|| {
                MemoirError::Plan(format!(
                    "chapter {chapter_id:?} has no question {question_id:?}"
                ))
            })?;
        Ok(chapter.questions.remove(index))
    }

    /// Moves a starter question within its chapter to `new_index` (0-based, counted after
    /// taking it out); the interview asks unasked questions in this order.
    pub fn move_question(
        &mut self,
        chapter_id: &str,
        question_id: &str,
        new_index: usize,
    ) -> Result<()> {
        let chapter = self.chapter_mut(chapter_id)?;
        let index = chapter
            .questions
            .iter()
            .position(|question| question.id == question_id)
            .ok_or_else(|| {
                MemoirError::Plan(format!(
                    "chapter {chapter_id:?} has no question {question_id:?}"
                ))
            })?;
        if new_index >= chapter.questions.len() {
            return Err(MemoirError::Plan(format!(
                "cannot move question {question_id:?} to position {new_index}: chapter {chapter_id:?} has {} questions",
                chapter.questions.len()
            )));
        }
        let question = chapter.questions.remove(index);
        chapter.questions.insert(new_index, question);
        Ok(())
    }

    fn chapter_index(&self, chapter_id: &str) -> Result<usize> {
        self.chapters
            .iter()
            .position(|chapter| chapter.id == chapter_id)
            .ok_or_else(|| unknown_chapter(chapter_id))
    }
}

fn unknown_chapter(chapter_id: &str) -> MemoirError {
    MemoirError::Plan(format!("the plan has no chapter {chapter_id:?}"))
}

/// `prefix` followed by the smallest number not yet taken.
fn fresh_id<'a>(prefix: &str, taken: impl Iterator<Item = &'a str> + Clone) -> String {
    (1..)
        .map(|number| format!("{prefix}{number}"))
        .find(|candidate| !taken.clone().any(|id| id == candidate))
        .expect("an unbounded range always has a free number")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_plans_are_valid_in_both_languages_and_share_ids() {
        let english = MemoirPlan::default_for("Walter", Language::English);
        let chinese = MemoirPlan::default_for("李奶奶", Language::SimplifiedChinese);
        english.validate().unwrap();
        chinese.validate().unwrap();
        assert!(english.chapters.len() >= 9);
        for (en, zh) in english.chapters.iter().zip(&chinese.chapters) {
            assert_eq!(en.id, zh.id);
            assert_eq!(en.questions.len(), zh.questions.len());
            assert!(en.title.is_ascii(), "English title {:?}", en.title);
            assert!(
                zh.title
                    .chars()
                    .any(|c| ('\u{4e00}'..='\u{9fff}').contains(&c)),
                "Chinese title {:?}",
                zh.title
            );
        }
        assert!(english.chapters.iter().any(|c| c.id == "advice"));
    }

    #[test]
    fn json_round_trip_keeps_everything() {
        let plan = MemoirPlan::default_for("李奶奶", Language::SimplifiedChinese);
        let json = plan.to_json();
        assert!(json.contains("\"zh-Hans\""));
        assert_eq!(MemoirPlan::from_json(&json).unwrap(), plan);
    }

    #[test]
    fn bad_json_plans_are_rejected_with_a_reason() {
        let duplicate = r#"{"teller_name":"A","language":"en","chapters":[
            {"id":"a","title":"One","questions":[]},{"id":"a","title":"Two","questions":[]}]}"#;
        let err = MemoirPlan::from_json(duplicate).unwrap_err().to_string();
        assert!(err.contains("used twice"), "{err}");
        let empty = r#"{"teller_name":"A","language":"en","chapters":[]}"#;
        assert!(MemoirPlan::from_json(empty)
            .unwrap_err()
            .to_string()
            .contains("no chapters"));
        let language = r#"{"teller_name":"A","language":"fr","chapters":[]}"#;
        assert!(MemoirPlan::from_json(language).is_err());
    }

    #[test]
    fn family_edits_keep_ids_stable() {
        let mut plan = MemoirPlan::default_for("Walter", Language::English);
        let id = plan.add_chapter("The War Years").unwrap();
        assert_eq!(id, "chapter-1");
        assert_eq!(plan.add_chapter("Music").unwrap(), "chapter-2");
        plan.move_chapter(&id, 0).unwrap();
        assert_eq!(plan.chapters[0].id, id);
        let q = plan.add_question(&id, "Where were you stationed?").unwrap();
        assert_eq!(q, "q1");
        assert_eq!(
            plan.add_question("childhood", "Did you have a pet?")
                .unwrap(),
            "q5"
        );
        plan.move_question("childhood", "q5", 0).unwrap();
        assert_eq!(
            plan.chapter("childhood").unwrap().questions[0].text,
            "Did you have a pet?"
        );
        assert!(plan.move_question("childhood", "q5", 9).is_err());
        assert!(plan.move_question("childhood", "q77", 0).is_err());
        plan.remove_question("childhood", "q2").unwrap();
        assert_eq!(plan.add_question("childhood", "Another?").unwrap(), "q2");
        plan.rename_chapter("school", "Schools").unwrap();
        assert_eq!(plan.chapter("school").unwrap().title, "Schools");
        assert!(plan.move_chapter(&id, 99).is_err());
        assert!(plan
            .chapter("nope")
            .unwrap_err()
            .to_string()
            .contains("nope"));
        plan.remove_chapter("work").unwrap();
        assert!(plan.chapter("work").is_err());
        plan.validate().unwrap();
    }
}
