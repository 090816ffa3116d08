/// Everything that can go wrong in this crate; each message names the problem.
#[derive(Debug, thiserror::Error)]
pub enum MemoirError {
    /// A memoir plan that cannot be used as it is (empty, duplicate ids, unknown chapter, …).
    #[error("memoir plan: {0}")]
    Plan(String),
    /// Interview state that contradicts the plan or is not ready for the asked step.
    #[error("interview: {0}")]
    Interview(String),
    /// A model reply that could not be understood.
    #[error("model reply: {0}")]
    ModelReply(String),
    /// Drafting input or a draft that cannot be used.
    #[error("draft: {0}")]
    Draft(String),
    /// A book that cannot be exported as it is (missing title, unreadable photo, bad URL, …).
    #[error("book: {0}")]
    Book(String),
    /// No usable font for the PDF (it must cover Chinese as well as Latin text).
    #[error("font: {0}")]
    Font(String),
    /// Writing the EPUB, PNG or PDF container failed.
    #[error("export: {0}")]
    Export(String),
    /// JSON that is not a valid plan or transcript.
    #[error("JSON: {0}")]
    Json(#[from] serde_json::Error),
}
