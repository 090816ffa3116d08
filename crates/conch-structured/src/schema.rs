//! JSON Schema → a grammar of value nodes that the decoder walks byte by byte.
//!
//! Only what the decoder can enforce exactly is accepted; every other keyword is a
//! [`SchemaError`] naming it and where it is, so a schema is never silently weakened.

use serde_json::{Map, Value};
use std::collections::HashMap;
use thiserror::Error;

/// A schema the decoder cannot enforce, or one that is malformed or has no instance.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{message} (at {path})")]
pub struct SchemaError {
    /// JSON pointer of the offending schema (`#` is the root).
    pub path: String,
    pub message: String,
}

fn err<T>(path: &str, message: impl Into<String>) -> Result<T, SchemaError> {
    Err(SchemaError {
        path: path.to_string(),
        message: message.into(),
    })
}

pub(crate) type NodeId = u32;

/// Containers nested deeper than this are not started (keeps recursive schemas and
/// `json_object` mode finite); schemas that need more nesting are rejected.
pub(crate) const MAX_DEPTH: u32 = 32;

/// Numbers are written with at most this many integer digits (so a model cannot write digits
/// forever, and bounds checks fit in `i128`).
pub(crate) const MAX_INT_DIGITS: u32 = 19;
const MAX_INTEGER: i128 = 9_999_999_999_999_999_999;

#[derive(Debug, Clone)]
pub(crate) struct Property {
    /// The key as the decoder emits it: the name serialized as a JSON string, quotes included.
    pub key: Vec<u8>,
    pub node: NodeId,
    pub required: bool,
}

#[derive(Debug, Clone)]
pub(crate) enum Node {
    /// Any one of the alternatives (anyOf, oneOf, enum, type arrays, `$ref` indirection).
    AnyOf(Vec<NodeId>),
    Object {
        props: Vec<Property>,
        /// Schema of keys not in `props`; `None` when additional properties are forbidden.
        additional: Option<NodeId>,
        /// Hashes of the declared keys' inner bytes: an additional key may not repeat one.
        declared_hashes: Vec<u64>,
    },
    Array {
        prefix: Vec<NodeId>,
        /// Schema of items after `prefix`; `None` when there may be none.
        items: Option<NodeId>,
        min: u32,
        max: u32,
    },
    String {
        min: u32,
        max: u32,
    },
    Number {
        integer: bool,
        /// Inclusive bounds, integers only.
        min: i128,
        max: i128,
    },
    /// One exact JSON text (enum/const values, true, false, null).
    Literal(Vec<u8>),
}

pub(crate) struct Grammar {
    pub nodes: Vec<Node>,
    pub root: NodeId,
    /// Fewest container levels a finite instance of each node needs ([`u32::MAX`]: none exists).
    pub min_depth: Vec<u32>,
}

impl Grammar {
    pub fn node(&self, id: NodeId) -> &Node {
        &self.nodes[id as usize]
    }
    /// Whether a value of `id` can start inside `depth` enclosing containers.
    pub fn fits(&self, id: NodeId, depth: u32) -> bool {
        self.min_depth[id as usize].saturating_add(depth) <= MAX_DEPTH
    }
    /// Item schema at `index` of an array node.
    pub fn array_item(&self, array: NodeId, index: u32) -> Option<NodeId> {
        match self.node(array) {
            Node::Array { prefix, items, .. } => prefix.get(index as usize).copied().or(*items),
            _ => None,
        }
    }
}

/// FNV-1a: additional keys are compared with declared ones by hash, so a frame stays `Copy`.
pub(crate) fn key_hash_step(hash: u64, byte: u8) -> u64 {
    (hash ^ byte as u64).wrapping_mul(0x100_0000_01b3)
}
pub(crate) const KEY_HASH_START: u64 = 0xcbf2_9ce4_8422_2325;

/// Keywords that only annotate: accepted and ignored. `format` is here on purpose: JSON Schema
/// 2020-12 makes it an annotation unless a validator opts in, and OpenAI's formats (date-time,
/// email, uuid, ...) would need a regular-language engine — the output still validates.
const ANNOTATIONS: &[&str] = &[
    "description",
    "title",
    "$schema",
    "$id",
    "$comment",
    "examples",
    "default",
    "$defs",
    "definitions",
    "format",
    "deprecated",
    "readOnly",
    "writeOnly",
];

const STRUCTURAL: &[&str] = &[
    "type",
    "properties",
    "required",
    "additionalProperties",
    "items",
    "prefixItems",
    "minItems",
    "maxItems",
    "minLength",
    "maxLength",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
];

const TYPES: &[&str] = &[
    "object", "array", "string", "number", "integer", "boolean", "null",
];

struct Compiler<'a> {
    root: &'a Value,
    nodes: Vec<Node>,
    refs: HashMap<String, NodeId>,
    any: Option<NodeId>,
}

/// Compiles `schema` (`None`: any JSON object, OpenAI's `json_object` mode).
pub(crate) fn compile(schema: Option<&Value>) -> Result<Grammar, SchemaError> {
    let any_object = Value::Object(Map::new());
    let root_value = schema.unwrap_or(&any_object);
    let mut c = Compiler {
        root: root_value,
        nodes: Vec::new(),
        refs: HashMap::new(),
        any: None,
    };
    let root = match schema {
        Some(s) => c.schema(s, "#")?,
        None => {
            let any = c.any();
            c.push(Node::Object {
                props: Vec::new(),
                additional: Some(any),
                declared_hashes: Vec::new(),
            })
        }
    };
    flatten_alternatives(&mut c.nodes);
    let min_depth = min_depths(&c.nodes);
    if min_depth[root as usize] > MAX_DEPTH {
        return err(
            "#",
            format!("the schema has no instance nested at most {MAX_DEPTH} levels deep"),
        );
    }
    Ok(Grammar {
        nodes: c.nodes,
        root,
        min_depth,
    })
}

/// Replaces each `AnyOf` by the non-`AnyOf` nodes it reaches through nested `AnyOf`s, so that
/// starting a value never recurses (and `$ref` cycles with no container in between end).
fn flatten_alternatives(nodes: &mut [Node]) {
    fn leaves(nodes: &[Node], id: NodeId, seen: &mut Vec<NodeId>, out: &mut Vec<NodeId>) {
        if seen.contains(&id) {
            return;
        }
        seen.push(id);
        match &nodes[id as usize] {
            Node::AnyOf(alts) => {
                for &alt in alts {
                    leaves(nodes, alt, seen, out);
                }
            }
            _ => out.push(id),
        }
    }
    for id in 0..nodes.len() {
        if matches!(nodes[id], Node::AnyOf(_)) {
            let mut out = Vec::new();
            leaves(nodes, id as NodeId, &mut Vec::new(), &mut out);
            nodes[id] = Node::AnyOf(out);
        }
    }
}

/// Fixed point of the fewest container levels each node's smallest instance needs.
fn min_depths(nodes: &[Node]) -> Vec<u32> {
    let mut depth = vec![u32::MAX; nodes.len()];
    loop {
        let mut changed = false;
        for (i, node) in nodes.iter().enumerate() {
            let d = match node {
                Node::AnyOf(alts) => alts
                    .iter()
                    .map(|&a| depth[a as usize])
                    .min()
                    .unwrap_or(u32::MAX),
                Node::Object { props, .. } => props
                    .iter()
                    .filter(|p| p.required)
                    .map(|p| depth[p.node as usize])
                    .max()
                    .unwrap_or(0)
                    .saturating_add(1),
                Node::Array {
                    prefix, items, min, ..
                } => (0..*min)
                    .map(|k| {
                        prefix
                            .get(k as usize)
                            .or(items.as_ref())
                            .map_or(u32::MAX, |&n| depth[n as usize])
                    })
                    .max()
                    .unwrap_or(0)
                    .saturating_add(1),
                Node::String { .. } | Node::Number { .. } | Node::Literal(_) => 0,
            };
            if d < depth[i] {
                depth[i] = d;
                changed = true;
            }
        }
        if !changed {
            return depth;
        }
    }
}

fn literal(value: &Value) -> Vec<u8> {
    serde_json::to_vec(value).expect("a serde_json::Value always serializes")
}

fn json_type_matches(value: &Value, ty: &str) -> bool {
    match ty {
        "object" => value.is_object(),
        "array" => value.is_array(),
        "string" => value.is_string(),
        "number" => value.is_number(),
        "integer" => {
            value.is_i64() || value.is_u64() || value.as_f64().is_some_and(|f| f.fract() == 0.0)
        }
        "boolean" => value.is_boolean(),
        "null" => value.is_null(),
        _ => false,
    }
}

fn as_count(value: &Value, path: &str, key: &str) -> Result<u32, SchemaError> {
    match value.as_u64() {
        Some(n) => Ok(n.min(u32::MAX as u64) as u32),
        None => err(path, format!("`{key}` must be a non-negative integer")),
    }
}

impl Compiler<'_> {
    fn push(&mut self, node: Node) -> NodeId {
        self.nodes.push(node);
        (self.nodes.len() - 1) as NodeId
    }

    /// The "any JSON value" node (shared, recursive through object values and array items).
    fn any(&mut self) -> NodeId {
        if let Some(id) = self.any {
            return id;
        }
        let id = self.push(Node::AnyOf(Vec::new()));
        self.any = Some(id);
        let alts = vec![
            self.push(Node::Object {
                props: Vec::new(),
                additional: Some(id),
                declared_hashes: Vec::new(),
            }),
            self.push(Node::Array {
                prefix: Vec::new(),
                items: Some(id),
                min: 0,
                max: u32::MAX,
            }),
            self.push(Node::String {
                min: 0,
                max: u32::MAX,
            }),
            self.push(Node::Number {
                integer: false,
                min: i128::MIN,
                max: i128::MAX,
            }),
            self.push(Node::Literal(b"true".to_vec())),
            self.push(Node::Literal(b"false".to_vec())),
            self.push(Node::Literal(b"null".to_vec())),
        ];
        self.nodes[id as usize] = Node::AnyOf(alts);
        id
    }

    fn schema(&mut self, schema: &Value, path: &str) -> Result<NodeId, SchemaError> {
        let map = match schema {
            Value::Bool(true) => return Ok(self.any()),
            Value::Bool(false) => return err(path, "the `false` schema has no instance"),
            Value::Object(map) => map,
            _ => return err(path, "a schema must be an object or a boolean"),
        };
        for key in map.keys() {
            let known = ANNOTATIONS.contains(&key.as_str())
                || STRUCTURAL.contains(&key.as_str())
                || ["enum", "const", "anyOf", "oneOf", "allOf", "$ref"].contains(&key.as_str())
                || (key == "uniqueItems" && map[key] == Value::Bool(false));
            if !known {
                return err(path, format!("keyword `{key}` is not supported"));
            }
        }
        let constraints: Vec<&str> = map
            .keys()
            .map(String::as_str)
            .filter(|k| !ANNOTATIONS.contains(k) && *k != "uniqueItems")
            .collect();
        let only = |allowed: &[&str]| constraints.iter().all(|k| allowed.contains(k));

        if let Some(target) = map.get("$ref") {
            if !only(&["$ref"]) {
                return err(
                    path,
                    "`$ref` combined with other constraints is not supported",
                );
            }
            return self.reference(target, path);
        }
        for combinator in ["anyOf", "oneOf", "allOf"] {
            if let Some(list) = map.get(combinator) {
                if !only(&[combinator]) {
                    return err(
                        path,
                        format!("`{combinator}` combined with other constraints is not supported"),
                    );
                }
                let Some(list) = list.as_array().filter(|l| !l.is_empty()) else {
                    return err(path, format!("`{combinator}` must be a non-empty array"));
                };
                if combinator == "allOf" && list.len() != 1 {
                    return err(path, "`allOf` with more than one schema is not supported");
                }
                let mut alts = Vec::with_capacity(list.len());
                for (i, sub) in list.iter().enumerate() {
                    alts.push(self.schema(sub, &format!("{path}/{combinator}/{i}"))?);
                }
                return Ok(if alts.len() == 1 {
                    alts[0]
                } else {
                    self.push(Node::AnyOf(alts))
                });
            }
        }

        let types: Vec<&str> = match map.get("type") {
            None => Vec::new(),
            Some(Value::String(t)) => vec![t.as_str()],
            Some(Value::Array(list)) => {
                let mut types = Vec::new();
                for t in list {
                    match t.as_str() {
                        Some(t) if !types.contains(&t) => types.push(t),
                        _ => return err(path, "`type` array must hold distinct type names"),
                    }
                }
                types
            }
            Some(_) => return err(path, "`type` must be a string or an array of strings"),
        };
        if let Some(bad) = types.iter().find(|t| !TYPES.contains(t)) {
            return err(path, format!("unknown type `{bad}`"));
        }

        if map.contains_key("enum") || map.contains_key("const") {
            if !only(&["enum", "const", "type"]) {
                return err(
                    path,
                    "`enum`/`const` combined with constraints other than `type` is not supported",
                );
            }
            let values: Vec<&Value> = match (map.get("enum"), map.get("const")) {
                (Some(_), Some(_)) => return err(path, "both `enum` and `const` given"),
                (Some(Value::Array(list)), None) => list.iter().collect(),
                (Some(_), None) => return err(path, "`enum` must be an array"),
                (None, Some(v)) => vec![v],
                (None, None) => unreachable!("checked above"),
            };
            let mut alts = Vec::new();
            let mut seen = Vec::new();
            for v in values {
                if !types.is_empty() && !types.iter().any(|t| json_type_matches(v, t)) {
                    continue;
                }
                let text = literal(v);
                if !seen.contains(&text) {
                    seen.push(text.clone());
                    alts.push(self.push(Node::Literal(text)));
                }
            }
            return match alts.len() {
                0 => err(path, "no `enum`/`const` value matches `type`"),
                1 => Ok(alts[0]),
                _ => Ok(self.push(Node::AnyOf(alts))),
            };
        }

        let types = if types.is_empty() {
            // Infer from the keywords present; none at all means any value.
            let has = |keys: &[&str]| keys.iter().any(|k| map.contains_key(*k));
            let mut inferred = Vec::new();
            if has(&["properties", "required", "additionalProperties"]) {
                inferred.push("object");
            }
            if has(&["items", "prefixItems", "minItems", "maxItems"]) {
                inferred.push("array");
            }
            if has(&["minLength", "maxLength"]) {
                inferred.push("string");
            }
            if has(&["minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"]) {
                return err(path, "numeric bounds need `\"type\": \"integer\"`");
            }
            if inferred.is_empty() {
                return Ok(self.any());
            }
            inferred
        } else {
            types
        };
        let mut alts = Vec::new();
        for ty in &types {
            alts.push(self.typed(map, ty, &types, path)?);
        }
        Ok(if alts.len() == 1 {
            alts[0]
        } else {
            self.push(Node::AnyOf(alts))
        })
    }

    fn reference(&mut self, target: &Value, path: &str) -> Result<NodeId, SchemaError> {
        let Some(pointer) = target.as_str() else {
            return err(path, "`$ref` must be a string");
        };
        if let Some(&id) = self.refs.get(pointer) {
            return Ok(id);
        }
        let supported = pointer.starts_with("#/$defs/")
            || pointer.starts_with("#/definitions/")
            || pointer == "#";
        if !supported {
            return err(
                path,
                format!(
                    "`$ref` {pointer:?} is not supported (only #/$defs/... and #/definitions/...)"
                ),
            );
        }
        let json_pointer = &pointer[1..];
        let Some(resolved) = self.root.pointer(json_pointer) else {
            return err(path, format!("`$ref` {pointer:?} does not resolve"));
        };
        // Reserve the id first so recursive references resolve to it.
        let id = self.push(Node::AnyOf(Vec::new()));
        self.refs.insert(pointer.to_string(), id);
        let body = self.schema(resolved, pointer)?;
        self.nodes[id as usize] = Node::AnyOf(vec![body]);
        Ok(id)
    }

    fn typed(
        &mut self,
        map: &Map<String, Value>,
        ty: &str,
        all_types: &[&str],
        path: &str,
    ) -> Result<NodeId, SchemaError> {
        // Keywords for a type that is not among the schema's types would be ignored: refuse them.
        let belongs = |key: &str| -> bool {
            let owner = match key {
                "properties" | "required" | "additionalProperties" => "object",
                "items" | "prefixItems" | "minItems" | "maxItems" => "array",
                "minLength" | "maxLength" => "string",
                "minimum" | "maximum" | "exclusiveMinimum" | "exclusiveMaximum" => "integer",
                _ => return true,
            };
            all_types.contains(&owner)
        };
        if let Some(key) = map.keys().find(|k| !belongs(k)) {
            let hint = if all_types.contains(&"number") && key.contains("imum") {
                " (numeric bounds are enforced for `integer` only)"
            } else {
                ""
            };
            return err(
                path,
                format!("keyword `{key}` does not apply to type {all_types:?}{hint}"),
            );
        }
        match ty {
            "object" => self.object(map, path),
            "array" => self.array(map, path),
            "string" => {
                let min = map
                    .get("minLength")
                    .map(|v| as_count(v, path, "minLength"))
                    .transpose()?
                    .unwrap_or(0);
                let max = map
                    .get("maxLength")
                    .map(|v| as_count(v, path, "maxLength"))
                    .transpose()?
                    .unwrap_or(u32::MAX);
                if min > max {
                    return err(path, "`minLength` exceeds `maxLength`");
                }
                Ok(self.push(Node::String { min, max }))
            }
            "integer" => {
                let (min, max) = integer_bounds(map, path)?;
                Ok(self.push(Node::Number {
                    integer: true,
                    min,
                    max,
                }))
            }
            "number" => Ok(self.push(Node::Number {
                integer: false,
                min: i128::MIN,
                max: i128::MAX,
            })),
            "boolean" => {
                let t = self.push(Node::Literal(b"true".to_vec()));
                let f = self.push(Node::Literal(b"false".to_vec()));
                Ok(self.push(Node::AnyOf(vec![t, f])))
            }
            "null" => Ok(self.push(Node::Literal(b"null".to_vec()))),
            _ => unreachable!("types are checked against TYPES"),
        }
    }

    fn object(&mut self, map: &Map<String, Value>, path: &str) -> Result<NodeId, SchemaError> {
        let empty = Map::new();
        let properties = match map.get("properties") {
            None => &empty,
            Some(Value::Object(p)) => p,
            Some(_) => return err(path, "`properties` must be an object"),
        };
        let required: Vec<&str> = match map.get("required") {
            None => Vec::new(),
            Some(Value::Array(list)) => {
                let mut names = Vec::new();
                for v in list {
                    match v.as_str() {
                        Some(s) => names.push(s),
                        None => return err(path, "`required` must be an array of strings"),
                    }
                }
                names
            }
            Some(_) => return err(path, "`required` must be an array"),
        };
        let additional = match map.get("additionalProperties") {
            None | Some(Value::Bool(true)) => Some(self.any()),
            Some(Value::Bool(false)) => None,
            Some(s @ Value::Object(_)) => {
                Some(self.schema(s, &format!("{path}/additionalProperties"))?)
            }
            Some(_) => return err(path, "`additionalProperties` must be a boolean or a schema"),
        };
        let mut props = Vec::new();
        for (name, sub) in properties {
            let node = self.schema(sub, &format!("{path}/properties/{}", escape_pointer(name)))?;
            props.push(Property {
                key: literal(&Value::String(name.clone())),
                node,
                required: required.contains(&name.as_str()),
            });
        }
        // A required name with no declared schema is an additional property that must appear.
        for name in &required {
            if !properties.contains_key(*name) {
                let Some(node) = additional else {
                    return err(
                        path,
                        format!("required property {name:?} is not in `properties` and additional properties are forbidden"),
                    );
                };
                props.push(Property {
                    key: literal(&Value::String(name.to_string())),
                    node,
                    required: true,
                });
            }
        }
        let declared_hashes = props
            .iter()
            .map(|p| {
                p.key[1..p.key.len() - 1]
                    .iter()
                    .fold(KEY_HASH_START, |h, &b| key_hash_step(h, b))
            })
            .collect();
        Ok(self.push(Node::Object {
            props,
            additional,
            declared_hashes,
        }))
    }

    fn array(&mut self, map: &Map<String, Value>, path: &str) -> Result<NodeId, SchemaError> {
        let mut prefix = Vec::new();
        match map.get("prefixItems") {
            None => {}
            Some(Value::Array(list)) => {
                for (i, sub) in list.iter().enumerate() {
                    prefix.push(self.schema(sub, &format!("{path}/prefixItems/{i}"))?);
                }
            }
            Some(_) => return err(path, "`prefixItems` must be an array"),
        }
        let items = match map.get("items") {
            None | Some(Value::Bool(true)) => Some(self.any()),
            Some(Value::Bool(false)) => None,
            Some(s @ Value::Object(_)) => Some(self.schema(s, &format!("{path}/items"))?),
            Some(_) => {
                return err(
                    path,
                    "`items` must be a schema (the array form is `prefixItems`)",
                )
            }
        };
        let min = map
            .get("minItems")
            .map(|v| as_count(v, path, "minItems"))
            .transpose()?
            .unwrap_or(0);
        let mut max = map
            .get("maxItems")
            .map(|v| as_count(v, path, "maxItems"))
            .transpose()?
            .unwrap_or(u32::MAX);
        if items.is_none() {
            max = max.min(prefix.len() as u32);
        }
        if min > max {
            return err(path, "`minItems` exceeds the most items the array may hold");
        }
        Ok(self.push(Node::Array {
            prefix,
            items,
            min,
            max,
        }))
    }
}

fn escape_pointer(name: &str) -> String {
    name.replace('~', "~0").replace('/', "~1")
}

/// Inclusive integer bounds from minimum/maximum/exclusiveMinimum/exclusiveMaximum.
fn integer_bounds(map: &Map<String, Value>, path: &str) -> Result<(i128, i128), SchemaError> {
    let mut min = i128::MIN;
    let mut max = i128::MAX;
    for (key, lower, exclusive) in [
        ("minimum", true, false),
        ("exclusiveMinimum", true, true),
        ("maximum", false, false),
        ("exclusiveMaximum", false, true),
    ] {
        let Some(v) = map.get(key) else { continue };
        let Some(f) = v.as_f64() else {
            return err(path, format!("`{key}` must be a number"));
        };
        if !f.is_finite() || f.abs() > 1e30 {
            return err(path, format!("`{key}` is out of range"));
        }
        let bound = if lower {
            let b = f.ceil() as i128;
            if exclusive && b as f64 == f {
                b + 1
            } else {
                b
            }
        } else {
            let b = f.floor() as i128;
            if exclusive && b as f64 == f {
                b - 1
            } else {
                b
            }
        };
        if lower {
            min = min.max(bound);
        } else {
            max = max.min(bound);
        }
    }
    if min > max {
        return err(path, "the integer bounds admit no value");
    }
    if min > MAX_INTEGER || max < -MAX_INTEGER {
        return err(
            path,
            "the integer bounds admit no integer of at most 19 digits",
        );
    }
    Ok((min, max))
}
