//! Opening a model file or directory into everything needed to run it.

use crate::{EngineError, SamplingParams};
use conch_formats::{GgufFile, HfModelDir};
use conch_models::Model;
use conch_structured::{TokenVocab, ToolFormat};
use conch_tokenizer::{ChatTemplate, Tokenizer};
use std::path::Path;
use std::sync::OnceLock;

/// A model ready to run: weights, tokenizer, chat template and the model's own generation defaults.
pub struct LoadedModel {
    /// A short name for display and for APIs (`/v1/models`).
    pub name: String,
    pub model: Box<dyn Model>,
    pub tokenizer: Tokenizer,
    pub chat_template: ChatTemplate,
    /// False when the model's files carry no chat template and ChatML stands in (as llama.cpp does).
    pub has_own_chat_template: bool,
    /// Sampling settings the model's files recommend (generation_config.json), else Conch's defaults.
    pub default_sampling: SamplingParams,
    /// Every token's bytes arranged for constrained decoding, built on first use.
    token_vocab: OnceLock<TokenVocab>,
}

impl LoadedModel {
    /// The longest sequence the model was trained for.
    pub fn context_length(&self) -> usize {
        self.model.config().context_length
    }

    /// A conversation rendered with the chat template (ending with the assistant's turn opened) and
    /// tokenized; a template that writes BOS itself does not get a second one.
    pub fn chat_prompt(
        &self,
        messages: &[serde_json::Value],
        tools: Option<&[serde_json::Value]>,
    ) -> Result<Vec<u32>, EngineError> {
        let text = self.chat_template.render(messages, tools, true, None)?;
        let bos_written = self
            .tokenizer
            .bos_id()
            .and_then(|b| self.tokenizer.id_to_token(b))
            .is_some_and(|b| text.starts_with(&b));
        Ok(self.tokenizer.encode(&text, !bos_written, true)?)
    }

    /// The vocabulary as constrained decoding walks it.
    pub fn token_vocab(&self) -> &TokenVocab {
        self.token_vocab
            .get_or_init(|| TokenVocab::from_tokenizer(&self.tokenizer))
    }

    /// How this model writes tool calls, judged from its chat template.
    pub fn tool_format(&self) -> ToolFormat {
        ToolFormat::detect(self.chat_template.source())
    }

    /// Whether the tokenizer puts BOS in front of a text when asked to add special tokens.
    pub fn adds_bos(&self) -> bool {
        match (
            self.tokenizer.bos_id(),
            self.tokenizer.encode("", true, false),
        ) {
            (Some(bos), Ok(ids)) => ids.first() == Some(&bos),
            _ => false,
        }
    }
}

/// Loads a GGUF file, or a Hugging Face directory (config.json + safetensors + tokenizer.json).
pub fn load(path: &Path) -> Result<LoadedModel, EngineError> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().trim_end_matches(".gguf").to_string())
        .unwrap_or_else(|| path.display().to_string());
    if path.is_dir() {
        let dir = HfModelDir::open(path)?;
        let model = conch_models::load_hf(&dir)?;
        let tokenizer = Tokenizer::from_hf_dir(path)?;
        let (chat_template, has_own_chat_template) = chat_template(
            conch_tokenizer::template::template_from_hf_dir(path)?,
            &tokenizer,
        )?;
        let default_sampling = dir
            .generation_config
            .as_ref()
            .map(sampling_from_generation_config)
            .unwrap_or_default();
        Ok(LoadedModel {
            name,
            model,
            tokenizer,
            chat_template,
            has_own_chat_template,
            default_sampling,
            token_vocab: OnceLock::new(),
        })
    } else {
        let gguf = GgufFile::open(path)?;
        let model = conch_models::load_gguf(&gguf)?;
        let tokenizer = Tokenizer::from_gguf(&gguf)?;
        let (chat_template, has_own_chat_template) = chat_template(
            conch_tokenizer::template::template_from_gguf(&gguf),
            &tokenizer,
        )?;
        let name = gguf
            .get_str("general.name")
            .map(str::to_string)
            .unwrap_or(name);
        Ok(LoadedModel {
            name,
            model,
            tokenizer,
            chat_template,
            has_own_chat_template,
            default_sampling: SamplingParams::default(),
            token_vocab: OnceLock::new(),
        })
    }
}

/// ChatML, for models whose files carry no chat template (llama.cpp's choice too).
const CHATML: &str = "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

/// The model's template (or ChatML) with the tokenizer's own BOS and EOS texts, which templates may
/// write out; the flag says whether the model brought its own.
fn chat_template(
    source: Option<String>,
    tokenizer: &Tokenizer,
) -> Result<(ChatTemplate, bool), EngineError> {
    let text = |id: Option<u32>| {
        id.and_then(|id| tokenizer.id_to_token(id))
            .unwrap_or_default()
    };
    let bos = text(tokenizer.bos_id());
    let eos = text(tokenizer.eos_ids().first().copied());
    let own = source.is_some();
    Ok((
        ChatTemplate::new(source.as_deref().unwrap_or(CHATML), &bos, &eos)?,
        own,
    ))
}

/// Reads the sampling keys of a Hugging Face `generation_config.json`.
fn sampling_from_generation_config(cfg: &serde_json::Value) -> SamplingParams {
    let mut p = SamplingParams::default();
    let num = |k: &str| cfg.get(k).and_then(|v| v.as_f64());
    if cfg.get("do_sample").and_then(|v| v.as_bool()) == Some(false) {
        p.temperature = 0.0;
    } else if let Some(t) = num("temperature") {
        p.temperature = t as f32;
    }
    if let Some(v) = num("top_p") {
        p.top_p = v as f32;
    }
    if let Some(v) = num("top_k") {
        p.top_k = v as usize;
    }
    if let Some(v) = num("min_p") {
        p.min_p = v as f32;
    }
    if let Some(v) = num("repetition_penalty") {
        p.repetition_penalty = v as f32;
    }
    p
}
