//! Structured output for the OpenAI-compatible server: JSON constrained by a JSON Schema while
//! it is generated, and tool calls in each model family's own format.
//!
//! No HTTP here: this crate knows bytes, token byte strings and JSON values.
//!
//! # What constrained output looks like
//!
//! - **Schemas**: `type` (one or an array), `properties`, `required`, `additionalProperties`
//!   (absent means allowed, as in JSON Schema), `enum`, `const`, `anyOf`, `oneOf` (enforced as
//!   `anyOf`: alternatives that overlap may both match), a single-schema `allOf`, `items`,
//!   `prefixItems`, `minItems`/`maxItems`, `minLength`/`maxLength` (in characters), integer
//!   `minimum`/`maximum`/`exclusiveMinimum`/`exclusiveMaximum`, and `$ref` to `#`, `#/$defs/...`
//!   or `#/definitions/...` (recursion included). `description`, `title`, `default`, `examples`
//!   and `format` are annotations: `format` is not enforced (JSON Schema 2020-12 makes it an
//!   annotation unless a validator opts in, so the output still validates). Every other keyword
//!   (`pattern`, `patternProperties`, `not`, `if`, `minProperties`, `uniqueItems: true`,
//!   `multipleOf`, bounds on `number`, ...) is a [`SchemaError`] naming it and its place.
//! - **Property order**: properties are written in the schema's order; an optional one may be
//!   skipped, a required one may not, and none repeats. Undeclared keys (when allowed) come
//!   after every required property and are never followed by a declared one; they may not
//!   contain escapes when the object declares properties, nor equal a declared name.
//! - **Whitespace**: at most [`MAX_WHITESPACE_RUN`] bytes (space, tab, CR, LF) in a row
//!   between tokens — room for newlines and indentation, not for an endless run — and none
//!   after the top-level value: once it is complete only eos may follow.
//! - **Numbers**: at most 19 integer digits, 16 fraction digits and a 2-digit exponent (every
//!   value fits `f64`; a model cannot write digits forever); integers are written without
//!   fraction or exponent, and `-0` is not written for them.
//! - **Nesting**: at most 32 containers deep; a container is only started where the schema's
//!   smallest instance still fits, so recursive schemas and `json_object` cannot get stuck.
//!   Schemas with no instance that fits are rejected when compiled.
//! - **Never stuck**: every state reachable from a valid prefix can be completed by single
//!   bytes, so a vocabulary holding every byte as a token (byte-level BPE, SentencePiece with
//!   byte fallback) always has an allowed token. With a vocabulary lacking some bytes
//!   [`JsonConstraint::allowed`] can return 0: the caller must then end the request with an error.
//! - **Special tokens** are never allowed inside the JSON (pass empty bytes for them, as
//!   [`TokenVocab::from_tokenizer`] does); the eos ids only once the value is complete.
//!
//! - [`TokenVocab`] (once per model) and [`JsonConstraint`] (once per request): before each
//!   sampling step [`JsonConstraint::allowed`] marks the tokens that keep the output a valid
//!   prefix of a value the schema accepts; [`JsonConstraint::advance`] consumes the chosen one.
//! - [`ToolFormat`], [`parse_tool_calls`] and [`ToolCallStream`] find tool calls in generated
//!   text; [`forced_tool_call`] builds the schema and wrapping text that force one.

mod constraint;
mod schema;
mod tools;
mod vocab;

pub use constraint::{ConstraintError, JsonConstraint, MAX_WHITESPACE_RUN};
pub use schema::SchemaError;
pub use tools::{
    forced_tool_call, parse_tool_calls, ForcedCall, ForcedChoice, ParsedReply, ToolCall,
    ToolCallStream, ToolFormat,
};
pub use vocab::TokenVocab;
