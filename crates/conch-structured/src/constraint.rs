//! The decoder: a nondeterministic pushdown automaton over bytes, driven by the compiled schema.
//!
//! A state is a set of stacks (more than one while `anyOf`/`enum` alternatives or candidate keys
//! are still undecided). Stacks live in an arena as linked frames, so trying a byte never copies
//! a stack: it pushes new frames that share their parent. Masking walks the vocabulary's byte
//! trie from the current state and truncates the arena back after each subtree.

use crate::schema::{
    self, key_hash_step, Grammar, Node, NodeId, SchemaError, KEY_HASH_START, MAX_INT_DIGITS,
};
use crate::vocab::{utf8_lead, TokenVocab, Trie};
use serde_json::Value;
use std::collections::HashSet;
use thiserror::Error;

/// Whitespace bytes allowed in one run between JSON tokens (enough for a newline and the
/// indentation of a pretty-printed value several levels deep); none after the top-level value.
pub const MAX_WHITESPACE_RUN: u8 = 32;
/// Digits allowed after the decimal point.
const MAX_FRACTION_DIGITS: u32 = 16;
/// Exponent digits allowed: two keep every number within the range of `f64`.
const MAX_EXPONENT_DIGITS: u32 = 2;

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ConstraintError {
    /// The token's bytes cannot continue the JSON value; the state is unchanged.
    #[error("token {0:?} cannot continue the constrained JSON value")]
    Rejected(String),
    #[error("mask has {got} entries but the vocabulary has {expected} tokens")]
    MaskLength { expected: usize, got: usize },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum ObjPhase {
    /// After `{`: a key or `}`.
    Open,
    /// After a key: `:`.
    Key,
    /// After `:`: the value.
    Colon,
    /// After a value: `,` or `}`.
    Value,
    /// After `,`: a key.
    Comma,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum ArrPhase {
    Open,
    Value,
    Comma,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum NumPhase {
    Minus,
    Zero,
    Int,
    Dot,
    Frac,
    Exp,
    ExpSign,
    ExpDigits,
}

/// Where inside a string escape the decoder is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Escape {
    None,
    /// After `\`.
    Backslash,
    /// After `\u` and this many hex digits of the first (or only) UTF-16 unit.
    Hex(u8),
    /// After a high surrogate: `\` of the low one must follow.
    LowBackslash,
    /// ... then `u`.
    LowU,
    /// After `\u` and this many hex digits of the low surrogate.
    LowHex(u8),
}

/// Sentinel for `pending` and key literals: the key is an additional (undeclared) property.
const ADDITIONAL: u32 = u32::MAX;
/// Sentinel for literal frames that are values, not keys.
const NOT_KEY: u32 = u32::MAX - 1;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Frame {
    Root {
        done: bool,
        ws: u8,
    },
    Object {
        node: NodeId,
        phase: ObjPhase,
        /// Index of the first declared property that may still be written.
        next: u32,
        /// The property whose value follows (`ADDITIONAL` for an undeclared key).
        pending: u32,
        ws: u8,
    },
    Array {
        node: NodeId,
        phase: ArrPhase,
        count: u32,
        ws: u8,
    },
    Str {
        /// The string node, or for an additional key the object node.
        node: NodeId,
        is_key: bool,
        chars: u32,
        /// UTF-8 continuation bytes still due, and the range of the next one.
        need: u8,
        lo: u8,
        hi: u8,
        escape: Escape,
        /// Hash of an additional key's raw bytes.
        hash: u64,
    },
    Num {
        node: NodeId,
        phase: NumPhase,
        /// Digits in the current part (integer, fraction or exponent).
        digits: u8,
        negative: bool,
        /// The integer part's magnitude.
        magnitude: u64,
    },
    Lit {
        /// The literal node, or for a declared key the object node.
        node: NodeId,
        /// The declared property index for a key, else `NOT_KEY`.
        key: u32,
        pos: u32,
    },
}

impl Frame {
    fn is_container(&self) -> bool {
        matches!(self, Frame::Object { .. } | Frame::Array { .. })
    }
}

#[derive(Clone, Copy, Debug)]
struct Link {
    frame: Frame,
    parent: u32,
    depth: u32,
}

const NO_PARENT: u32 = u32::MAX;

/// Stacks as linked frames, and the tops of the stacks alive after each byte tried.
#[derive(Clone, Debug, Default)]
struct Arena {
    links: Vec<Link>,
    tops: Vec<u32>,
}

impl Arena {
    fn push(&mut self, frame: Frame, parent: u32) -> u32 {
        let base = if parent == NO_PARENT {
            0
        } else {
            self.links[parent as usize].depth
        };
        self.links.push(Link {
            frame,
            parent,
            depth: base + frame.is_container() as u32,
        });
        (self.links.len() - 1) as u32
    }
    /// The same stack with its top frame replaced.
    fn replace(&mut self, link: u32, frame: Frame) -> u32 {
        let parent = self.links[link as usize].parent;
        self.push(frame, parent)
    }
    fn frame(&self, link: u32) -> Frame {
        self.links[link as usize].frame
    }
    fn emit(&mut self, link: u32) {
        self.tops.push(link);
    }
}

fn is_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\n' | b'\r' | b'\t')
}

fn hex_value(b: u8) -> Option<u16> {
    (b as char).to_digit(16).map(|d| d as u16)
}

/// A JSON value being generated under a schema: which tokens may come next, and the value so far.
#[derive(Clone)]
pub struct JsonConstraint {
    grammar: std::sync::Arc<Grammar>,
    state: Arena,
}

impl std::fmt::Debug for JsonConstraint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JsonConstraint")
            .field("stacks", &self.state.tops.len())
            .finish()
    }
}

impl JsonConstraint {
    /// `None`: any JSON object (OpenAI's `json_object`). `Some(schema)`: a value valid under it.
    ///
    /// Object properties are written in the schema's `properties` order: each declared property
    /// may be skipped unless `required`, and undeclared ones (when `additionalProperties`
    /// allows them) come after every required property, with no declared key after them.
    pub fn new(schema: Option<&Value>) -> Result<JsonConstraint, SchemaError> {
        let grammar = schema::compile(schema)?;
        let mut state = Arena::default();
        let root = state.push(Frame::Root { done: false, ws: 0 }, NO_PARENT);
        state.emit(root);
        Ok(JsonConstraint {
            grammar: std::sync::Arc::new(grammar),
            state,
        })
    }

    /// Marks in `out` (one entry per token id) the tokens that keep the output a valid prefix,
    /// and the eos tokens once the value is complete; returns how many are allowed. Zero means
    /// the vocabulary cannot continue (only possible when it lacks some single-byte tokens).
    pub fn allowed(&self, vocab: &TokenVocab, out: &mut [bool]) -> Result<usize, ConstraintError> {
        if out.len() != vocab.len() {
            return Err(ConstraintError::MaskLength {
                expected: vocab.len(),
                got: out.len(),
            });
        }
        out.fill(false);
        let mut count = 0;
        if self.is_complete() {
            for &id in vocab.eos() {
                out[id as usize] = true;
                count += 1;
            }
        }
        let mut arena = self.state.clone();
        let tops = (0, arena.tops.len());
        let walker = Walker { g: &self.grammar };
        match walker.plain_string_room(&arena) {
            Some(room) => {
                // Inside strings, plain text tokens need no walk: they fit if they are short enough.
                for &(chars, id) in &vocab.plain_by_chars {
                    if chars > room {
                        break;
                    }
                    out[id as usize] = true;
                    count += 1;
                }
                walker.walk(&vocab.non_plain, 0, &mut arena, tops, out, &mut count);
            }
            None => walker.walk(&vocab.all, 0, &mut arena, tops, out, &mut count),
        }
        Ok(count)
    }

    /// Consumes a generated token's bytes. On error the state is unchanged.
    pub fn advance(&mut self, token_bytes: &[u8]) -> Result<(), ConstraintError> {
        let walker = Walker { g: &self.grammar };
        let mut arena = self.state.clone();
        let mut range = (0, arena.tops.len());
        for &b in token_bytes {
            let mark = arena.tops.len();
            for i in range.0..range.1 {
                let top = arena.tops[i];
                walker.step(&mut arena, top, b);
            }
            range = (mark, arena.tops.len());
            if range.0 == range.1 {
                return Err(ConstraintError::Rejected(
                    String::from_utf8_lossy(token_bytes).into_owned(),
                ));
            }
        }
        self.state = compact(&arena, range);
        Ok(())
    }

    /// The value is finished: only eos may follow (for a top-level number, more digits may too).
    pub fn is_complete(&self) -> bool {
        let walker = Walker { g: &self.grammar };
        self.state
            .tops
            .iter()
            .any(|&t| walker.can_end(&self.state, t))
    }
}

/// Copies the stacks ending at `tops[range]` into a fresh arena, dropping duplicates.
fn compact(arena: &Arena, range: (usize, usize)) -> Arena {
    let mut seen = HashSet::new();
    let mut out = Arena::default();
    for &top in &arena.tops[range.0..range.1] {
        let mut frames = Vec::new();
        let mut link = top;
        while link != NO_PARENT {
            frames.push(arena.links[link as usize].frame);
            link = arena.links[link as usize].parent;
        }
        frames.reverse();
        if seen.insert(frames.clone()) {
            let mut parent = NO_PARENT;
            for f in frames {
                parent = out.push(f, parent);
            }
            out.emit(parent);
        }
    }
    out
}

struct Walker<'g> {
    g: &'g Grammar,
}

impl Walker<'_> {
    /// When every stack is inside a string at a character boundary, outside an escape: the
    /// most characters any of them may still take.
    fn plain_string_room(&self, a: &Arena) -> Option<u32> {
        let mut room = 0;
        for &t in &a.tops {
            match a.frame(t) {
                Frame::Str {
                    node,
                    is_key,
                    chars,
                    need: 0,
                    escape: Escape::None,
                    ..
                } => {
                    let max = if is_key {
                        u32::MAX
                    } else {
                        self.string_bounds(node).1
                    };
                    room = room.max(max - chars);
                }
                _ => return None,
            }
        }
        Some(room)
    }

    fn walk(
        &self,
        trie: &Trie,
        node: u32,
        a: &mut Arena,
        tops: (usize, usize),
        out: &mut [bool],
        count: &mut usize,
    ) {
        for (byte, child) in trie.edges(node) {
            let links_mark = a.links.len();
            let tops_mark = a.tops.len();
            for i in tops.0..tops.1 {
                let top = a.tops[i];
                self.step(a, top, byte);
            }
            if a.tops.len() > tops_mark {
                for &id in trie.tokens(child) {
                    if !out[id as usize] {
                        out[id as usize] = true;
                        *count += 1;
                    }
                }
                self.walk(trie, child, a, (tops_mark, a.tops.len()), out, count);
            }
            a.links.truncate(links_mark);
            a.tops.truncate(tops_mark);
        }
    }

    fn string_bounds(&self, node: NodeId) -> (u32, u32) {
        match self.g.node(node) {
            Node::String { min, max } => (*min, *max),
            _ => (0, u32::MAX),
        }
    }

    fn can_end(&self, a: &Arena, link: u32) -> bool {
        match a.frame(link) {
            Frame::Root { done, .. } => done,
            Frame::Num { .. } => {
                let parent = a.links[link as usize].parent;
                self.number_can_end(a.frame(link))
                    && parent != NO_PARENT
                    && matches!(a.frame(parent), Frame::Root { .. })
            }
            _ => false,
        }
    }

    /// Feeds byte `b` to the stack topped by `top`, emitting the tops of the stacks that accept it.
    fn step(&self, a: &mut Arena, top: u32, b: u8) {
        let frame = a.frame(top);
        match frame {
            Frame::Root { done: false, ws } => {
                if is_ws(b) {
                    if ws < MAX_WHITESPACE_RUN {
                        let l = a.replace(
                            top,
                            Frame::Root {
                                done: false,
                                ws: ws + 1,
                            },
                        );
                        a.emit(l);
                    }
                } else {
                    self.start_value(a, self.g.root, top, b);
                }
            }
            Frame::Root { done: true, .. } => {}
            Frame::Object {
                node,
                phase,
                next,
                pending,
                ws,
            } => {
                if is_ws(b) {
                    if ws < MAX_WHITESPACE_RUN {
                        let l = a.replace(
                            top,
                            Frame::Object {
                                node,
                                phase,
                                next,
                                pending,
                                ws: ws + 1,
                            },
                        );
                        a.emit(l);
                    }
                    return;
                }
                let Node::Object {
                    props, additional, ..
                } = self.g.node(node)
                else {
                    unreachable!("object frames are made for object nodes")
                };
                let depth = a.links[top as usize].depth;
                let can_close = !props[next as usize..].iter().any(|p| p.required);
                match (phase, b) {
                    (ObjPhase::Open | ObjPhase::Comma, b'"') => {
                        for (i, p) in props.iter().enumerate().skip(next as usize) {
                            if self.g.fits(p.node, depth) {
                                let key = Frame::Lit {
                                    node,
                                    key: i as u32,
                                    pos: 1,
                                };
                                let l = a.push(key, top);
                                a.emit(l);
                            }
                            if p.required {
                                break;
                            }
                        }
                        if can_close && additional.is_some_and(|n| self.g.fits(n, depth)) {
                            let key = Frame::Str {
                                node,
                                is_key: true,
                                chars: 0,
                                need: 0,
                                lo: 0,
                                hi: 0,
                                escape: Escape::None,
                                hash: KEY_HASH_START,
                            };
                            let l = a.push(key, top);
                            a.emit(l);
                        }
                    }
                    (ObjPhase::Open, b'}') | (ObjPhase::Value, b'}') if can_close => {
                        self.finish_value(a, top)
                    }
                    (ObjPhase::Key, b':') => {
                        let l = a.replace(
                            top,
                            Frame::Object {
                                node,
                                phase: ObjPhase::Colon,
                                next,
                                pending,
                                ws: 0,
                            },
                        );
                        a.emit(l);
                    }
                    (ObjPhase::Colon, _) => {
                        let value = if pending == ADDITIONAL {
                            additional.expect("additional keys exist only when allowed")
                        } else {
                            props[pending as usize].node
                        };
                        self.start_value(a, value, top, b);
                    }
                    (ObjPhase::Value, b',') => {
                        let mut more = false;
                        for p in &props[next as usize..] {
                            more |= self.g.fits(p.node, depth);
                            if more || p.required {
                                break;
                            }
                        }
                        more |= can_close && additional.is_some_and(|n| self.g.fits(n, depth));
                        if more {
                            let l = a.replace(
                                top,
                                Frame::Object {
                                    node,
                                    phase: ObjPhase::Comma,
                                    next,
                                    pending,
                                    ws: 0,
                                },
                            );
                            a.emit(l);
                        }
                    }
                    _ => {}
                }
            }
            Frame::Array {
                node,
                phase,
                count,
                ws,
            } => {
                if is_ws(b) {
                    if ws < MAX_WHITESPACE_RUN {
                        let l = a.replace(
                            top,
                            Frame::Array {
                                node,
                                phase,
                                count,
                                ws: ws + 1,
                            },
                        );
                        a.emit(l);
                    }
                    return;
                }
                let Node::Array { min, max, .. } = *self.g.node(node) else {
                    unreachable!("array frames are made for array nodes")
                };
                let depth = a.links[top as usize].depth;
                let next_item = (count < max)
                    .then(|| self.g.array_item(node, count))
                    .flatten()
                    .filter(|&item| self.g.fits(item, depth));
                match (phase, b) {
                    (ArrPhase::Open | ArrPhase::Value, b']') if count >= min => {
                        self.finish_value(a, top)
                    }
                    (ArrPhase::Value, b',') if next_item.is_some() => {
                        let l = a.replace(
                            top,
                            Frame::Array {
                                node,
                                phase: ArrPhase::Comma,
                                count,
                                ws: 0,
                            },
                        );
                        a.emit(l);
                    }
                    (ArrPhase::Open | ArrPhase::Comma, _) => {
                        if let Some(item) = next_item {
                            self.start_value(a, item, top, b);
                        }
                    }
                    _ => {}
                }
            }
            Frame::Str { .. } => self.step_string(a, top, frame, b),
            Frame::Num { .. } => match self.step_number(frame, b) {
                Some(next) => {
                    let l = a.replace(top, next);
                    a.emit(l);
                }
                None => {
                    // Not part of the number: it ends here, and the byte goes to the container.
                    if self.number_can_end(frame) {
                        let parent = a.links[top as usize].parent;
                        if let Some(p) = self.completed(a, parent) {
                            self.step(a, p, b);
                        }
                    }
                }
            },
            Frame::Lit { node, key, pos } => {
                let text: &[u8] = match self.g.node(node) {
                    Node::Literal(text) => text,
                    Node::Object { props, .. } => &props[key as usize].key,
                    _ => unreachable!("literal frames are made for literals and keys"),
                };
                if text[pos as usize] != b {
                    return;
                }
                if pos as usize + 1 < text.len() {
                    let l = a.replace(
                        top,
                        Frame::Lit {
                            node,
                            key,
                            pos: pos + 1,
                        },
                    );
                    a.emit(l);
                } else {
                    let parent = a.links[top as usize].parent;
                    if key == NOT_KEY {
                        self.finish_value(a, top);
                    } else {
                        self.finish_key(a, parent, key);
                    }
                }
            }
        }
    }

    /// Starts a value of `node` with its first byte `b`, on top of `parent`.
    fn start_value(&self, a: &mut Arena, node: NodeId, parent: u32, b: u8) {
        let depth = a.links[parent as usize].depth;
        match self.g.node(node) {
            Node::AnyOf(alts) => {
                for &alt in alts {
                    if self.g.fits(alt, depth) {
                        self.start_value(a, alt, parent, b);
                    }
                }
            }
            Node::Object { .. } if b == b'{' => {
                let f = Frame::Object {
                    node,
                    phase: ObjPhase::Open,
                    next: 0,
                    pending: ADDITIONAL,
                    ws: 0,
                };
                let l = a.push(f, parent);
                a.emit(l);
            }
            Node::Array { .. } if b == b'[' => {
                let f = Frame::Array {
                    node,
                    phase: ArrPhase::Open,
                    count: 0,
                    ws: 0,
                };
                let l = a.push(f, parent);
                a.emit(l);
            }
            Node::String { .. } if b == b'"' => {
                let f = Frame::Str {
                    node,
                    is_key: false,
                    chars: 0,
                    need: 0,
                    lo: 0,
                    hi: 0,
                    escape: Escape::None,
                    hash: 0,
                };
                let l = a.push(f, parent);
                a.emit(l);
            }
            Node::Number { integer, min, max } => {
                let f = match b {
                    b'-' if !*integer || *min < 0 => Frame::Num {
                        node,
                        phase: NumPhase::Minus,
                        digits: 0,
                        negative: true,
                        magnitude: 0,
                    },
                    b'0' if *min <= 0 && *max >= 0 => Frame::Num {
                        node,
                        phase: NumPhase::Zero,
                        digits: 1,
                        negative: false,
                        magnitude: 0,
                    },
                    b'1'..=b'9' => Frame::Num {
                        node,
                        phase: NumPhase::Int,
                        digits: 1,
                        negative: false,
                        magnitude: (b - b'0') as u64,
                    },
                    _ => return,
                };
                if self.integer_viable(f) {
                    let l = a.push(f, parent);
                    a.emit(l);
                }
            }
            Node::Literal(text) if text[0] == b => {
                if text.len() == 1 {
                    if let Some(l) = self.completed(a, parent) {
                        a.emit(l);
                    }
                } else {
                    let l = a.push(
                        Frame::Lit {
                            node,
                            key: NOT_KEY,
                            pos: 1,
                        },
                        parent,
                    );
                    a.emit(l);
                }
            }
            _ => {}
        }
    }

    /// The value topped by `top` is complete: pop it and advance its container.
    fn finish_value(&self, a: &mut Arena, top: u32) {
        let parent = a.links[top as usize].parent;
        if let Some(l) = self.completed(a, parent) {
            a.emit(l);
        }
    }

    /// `container` after one of its values completed.
    fn completed(&self, a: &mut Arena, container: u32) -> Option<u32> {
        let frame = match a.frame(container) {
            Frame::Root { .. } => Frame::Root { done: true, ws: 0 },
            Frame::Object {
                node,
                next,
                pending,
                ..
            } => Frame::Object {
                node,
                phase: ObjPhase::Value,
                next,
                pending,
                ws: 0,
            },
            Frame::Array { node, count, .. } => Frame::Array {
                node,
                phase: ArrPhase::Value,
                count: count + 1,
                ws: 0,
            },
            _ => return None,
        };
        Some(a.replace(container, frame))
    }

    /// The object `container` after a key: property `prop` (or `ADDITIONAL`).
    fn finish_key(&self, a: &mut Arena, container: u32, prop: u32) {
        let Frame::Object { node, next, .. } = a.frame(container) else {
            return;
        };
        let Node::Object { props, .. } = self.g.node(node) else {
            return;
        };
        let next = if prop == ADDITIONAL {
            props.len() as u32
        } else {
            (prop + 1).max(next)
        };
        let l = a.replace(
            container,
            Frame::Object {
                node,
                phase: ObjPhase::Key,
                next,
                pending: prop,
                ws: 0,
            },
        );
        a.emit(l);
    }

    fn step_string(&self, a: &mut Arena, top: u32, frame: Frame, b: u8) {
        let Frame::Str {
            node,
            is_key,
            chars,
            need,
            lo,
            hi,
            escape,
            hash,
        } = frame
        else {
            unreachable!()
        };
        let (min, max) = if is_key {
            (0, u32::MAX)
        } else {
            self.string_bounds(node)
        };
        let hash = if is_key { key_hash_step(hash, b) } else { hash };
        let with = |chars: u32, need: u8, lo: u8, hi: u8, escape: Escape| Frame::Str {
            node,
            is_key,
            chars,
            need,
            lo,
            hi,
            escape,
            hash,
        };
        let next = match escape {
            _ if need > 0 => {
                if b < lo || b > hi {
                    return;
                }
                let chars = if need == 1 { chars + 1 } else { chars };
                with(chars, need - 1, 0x80, 0xBF, Escape::None)
            }
            Escape::None => match b {
                b'"' => {
                    let parent = a.links[top as usize].parent;
                    if is_key {
                        let Node::Object {
                            declared_hashes, ..
                        } = self.g.node(node)
                        else {
                            return;
                        };
                        if !declared_hashes.contains(&frame_hash(frame)) {
                            self.finish_key(a, parent, ADDITIONAL);
                        }
                    } else if chars >= min {
                        self.finish_value(a, top);
                    }
                    return;
                }
                _ if chars >= max => return,
                b'\\' => {
                    // Escapes in an undeclared key could spell a declared one: not allowed there.
                    let declared = matches!(self.g.node(node), Node::Object { props, .. } if !props.is_empty());
                    if is_key && declared {
                        return;
                    }
                    with(chars, 0, 0, 0, Escape::Backslash)
                }
                0..=0x1F => return,
                0x20..=0x7F => with(chars + 1, 0, 0, 0, Escape::None),
                _ => match utf8_lead(b) {
                    Some((len, lo, hi)) => with(chars, len as u8 - 1, lo, hi, Escape::None),
                    None => return,
                },
            },
            Escape::Backslash => match b {
                b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => {
                    with(chars + 1, 0, 0, 0, Escape::None)
                }
                b'u' => with(chars, 0, 0, 0, Escape::Hex(0)),
                _ => return,
            },
            Escape::Hex(n) => {
                let Some(d) = hex_value(b) else { return };
                // Track the first two digits in `lo`: D8-DB open a surrogate pair, DC-DF are a
                // lone low surrogate (invalid).
                let lead = if n < 2 {
                    lo.wrapping_mul(16).wrapping_add(d as u8)
                } else {
                    lo
                };
                if n == 1 && (0xDC..=0xDF).contains(&lead) {
                    return;
                }
                if n == 3 {
                    if (0xD8..=0xDB).contains(&lead) {
                        with(chars, 0, 0, 0, Escape::LowBackslash)
                    } else {
                        with(chars + 1, 0, 0, 0, Escape::None)
                    }
                } else {
                    with(chars, 0, lead, 0, Escape::Hex(n + 1))
                }
            }
            Escape::LowBackslash if b == b'\\' => with(chars, 0, 0, 0, Escape::LowU),
            Escape::LowU if b == b'u' => with(chars, 0, 0, 0, Escape::LowHex(0)),
            Escape::LowHex(n) => {
                let ok = match n {
                    0 => matches!(b, b'd' | b'D'),
                    1 => matches!(b, b'c'..=b'f' | b'C'..=b'F'),
                    _ => hex_value(b).is_some(),
                };
                if !ok {
                    return;
                }
                if n == 3 {
                    with(chars + 1, 0, 0, 0, Escape::None)
                } else {
                    with(chars, 0, 0, 0, Escape::LowHex(n + 1))
                }
            }
            Escape::LowBackslash | Escape::LowU => return,
        };
        let l = a.replace(top, next);
        a.emit(l);
    }

    /// The number frame after byte `b`, or `None` when `b` cannot extend the number.
    fn step_number(&self, frame: Frame, b: u8) -> Option<Frame> {
        let Frame::Num {
            node,
            phase,
            digits,
            negative,
            magnitude,
        } = frame
        else {
            unreachable!()
        };
        let Node::Number { integer, .. } = *self.g.node(node) else {
            unreachable!()
        };
        let digit = b.is_ascii_digit();
        let to = |phase: NumPhase, digits: u8, magnitude: u64| Frame::Num {
            node,
            phase,
            digits,
            negative,
            magnitude,
        };
        let next = match (phase, b) {
            (NumPhase::Minus, b'0') if !integer => to(NumPhase::Zero, 1, 0),
            (NumPhase::Minus, b'1'..=b'9') => to(NumPhase::Int, 1, (b - b'0') as u64),
            (NumPhase::Int, _) if digit && (digits as u32) < MAX_INT_DIGITS => to(
                NumPhase::Int,
                digits + 1,
                magnitude * 10 + (b - b'0') as u64,
            ),
            (NumPhase::Zero | NumPhase::Int, b'.') if !integer => to(NumPhase::Dot, 0, magnitude),
            (NumPhase::Zero | NumPhase::Int | NumPhase::Frac, b'e' | b'E') if !integer => {
                to(NumPhase::Exp, 0, magnitude)
            }
            (NumPhase::Dot, _) if digit => to(NumPhase::Frac, 1, magnitude),
            (NumPhase::Frac, _) if digit && (digits as u32) < MAX_FRACTION_DIGITS => {
                to(NumPhase::Frac, digits + 1, magnitude)
            }
            (NumPhase::Exp, b'+' | b'-') => to(NumPhase::ExpSign, 0, magnitude),
            (NumPhase::Exp | NumPhase::ExpSign, _) if digit => {
                to(NumPhase::ExpDigits, 1, magnitude)
            }
            (NumPhase::ExpDigits, _) if digit && (digits as u32) < MAX_EXPONENT_DIGITS => {
                to(NumPhase::ExpDigits, digits + 1, magnitude)
            }
            _ => return None,
        };
        self.integer_viable(next).then_some(next)
    }

    /// For a bounded integer: some completion of this prefix lies within the bounds.
    fn integer_viable(&self, frame: Frame) -> bool {
        let Frame::Num {
            node,
            phase,
            digits,
            negative,
            magnitude,
        } = frame
        else {
            return false;
        };
        let Node::Number { min, max, .. } = *self.g.node(node) else {
            return false;
        };
        if min == i128::MIN && max == i128::MAX {
            return true;
        }
        let sign = if negative { -1 } else { 1 };
        let overlaps = |lo: i128, hi: i128| lo <= max && hi >= min;
        match phase {
            NumPhase::Minus => min < 0,
            NumPhase::Zero => overlaps(0, 0),
            NumPhase::Int => {
                let m = magnitude as i128;
                (0..=MAX_INT_DIGITS - digits as u32).any(|k| {
                    let scale = 10i128.pow(k);
                    let (lo, hi) = (m * scale, m * scale + scale - 1);
                    if negative {
                        overlaps(-hi, -lo)
                    } else {
                        overlaps(lo, hi)
                    }
                })
            }
            // Fractions and exponents are not written for integers.
            _ => overlaps(sign * magnitude as i128, sign * magnitude as i128),
        }
    }

    /// The number may end here (a complete token, within bounds).
    fn number_can_end(&self, frame: Frame) -> bool {
        let Frame::Num {
            node,
            phase,
            negative,
            magnitude,
            ..
        } = frame
        else {
            return false;
        };
        if !matches!(
            phase,
            NumPhase::Zero | NumPhase::Int | NumPhase::Frac | NumPhase::ExpDigits
        ) {
            return false;
        }
        let Node::Number { min, max, .. } = *self.g.node(node) else {
            return false;
        };
        let value = if negative {
            -(magnitude as i128)
        } else {
            magnitude as i128
        };
        (min..=max).contains(&value)
    }
}

fn frame_hash(frame: Frame) -> u64 {
    match frame {
        Frame::Str { hash, .. } => hash,
        _ => 0,
    }
}
