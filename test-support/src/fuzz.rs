//! Message fuzzing: generated and mutated message bodies and host invocation payloads, from
//! seeds of the real message shapes (Event Grid events, restore requests, follow-ups, host
//! payloads). proptest's strategies generate the mutations; a seeded runner makes every run
//! produce the same messages, so a failure names a reproducible message number.
//!
//! A mutation is one to three operations on the seed: drop a field, replace a field's value with
//! a generated JSON value (wrong types, huge or hostile strings, deep nesting), add an unknown
//! field, replace the whole body with a generated value, or damage the bytes (truncate, flip,
//! insert, empty, not UTF-8).

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
use serde_json::{Map, Value};

/// One generated message and what was done to its seed (for assertion messages).
#[derive(Debug, Clone)]
pub struct Mutant {
    pub body: Vec<u8>,
    pub what: String,
}

#[derive(Debug, Clone)]
enum Op {
    Drop(Index),
    Set(Index, Value),
    Add(String, Value),
    Replace(Value),
    Bytes(ByteOp),
}

#[derive(Debug, Clone)]
enum ByteOp {
    Truncate(Index),
    Flip(Index, u8),
    Insert(Index, Vec<u8>),
    Empty,
    NotUtf8(Index),
}

/// Strings that have broken parsers, ids and queries before.
const HOSTILE: &[&str] = &[
    "",
    " ",
    "null",
    "../../../etc/passwd",
    "/subscriptions/../providers/Microsoft.Compute/virtualMachines/x",
    "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/",
    "' or 1==1 | project id //",
    "%2e%2e%2f",
    "\u{0000}",
    "\u{202e}gnp.exe",
    "😀😀😀",
    "9999-12-31T23:59:59.9999999Z",
    "0001-01-01T00:00:00Z",
    "-1",
    "1e309",
    "https://evil.example/?sig=secret",
    "<script>alert(1)</script>",
];

fn string() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => vec(any::<char>(), 0..24).prop_map(|c| c.into_iter().collect()),
        3 => proptest::sample::select(HOSTILE).prop_map(str::to_string),
        1 => (1usize..200_000).prop_map(|n| "A".repeat(n)),
    ]
}

/// Any JSON value, up to a few levels deep.
pub fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        string().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..6).prop_map(Value::Array),
            vec((string(), inner), 0..6)
                .prop_map(|kv| Value::Object(kv.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

fn op() -> impl Strategy<Value = Op> {
    let byte_op = prop_oneof![
        any::<Index>().prop_map(ByteOp::Truncate),
        (any::<Index>(), 1u8..=255).prop_map(|(i, x)| ByteOp::Flip(i, x)),
        (any::<Index>(), vec(any::<u8>(), 1..16)).prop_map(|(i, b)| ByteOp::Insert(i, b)),
        Just(ByteOp::Empty),
        any::<Index>().prop_map(ByteOp::NotUtf8),
    ];
    prop_oneof![
        4 => any::<Index>().prop_map(Op::Drop),
        6 => (any::<Index>(), json_value()).prop_map(|(i, v)| Op::Set(i, v)),
        1 => (string(), json_value()).prop_map(|(k, v)| Op::Add(k, v)),
        1 => json_value().prop_map(Op::Replace),
        2 => byte_op.prop_map(Op::Bytes),
    ]
}

#[derive(Debug, Clone)]
enum Seg {
    Key(String),
    Idx(usize),
}

/// Every path in `v` (objects' keys and arrays' elements, recursively), parents first.
fn paths(v: &Value, prefix: &mut Vec<Seg>, out: &mut Vec<Vec<Seg>>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                prefix.push(Seg::Key(k.clone()));
                out.push(prefix.clone());
                paths(x, prefix, out);
                prefix.pop();
            }
        }
        Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                prefix.push(Seg::Idx(i));
                out.push(prefix.clone());
                paths(x, prefix, out);
                prefix.pop();
            }
        }
        _ => {}
    }
}

fn path_text(p: &[Seg]) -> String {
    p.iter()
        .map(|s| match s {
            Seg::Key(k) => k.clone(),
            Seg::Idx(i) => i.to_string(),
        })
        .collect::<Vec<_>>()
        .join(".")
}

/// The parent of `p`'s last segment, and that segment.
fn parent_mut<'a>(v: &'a mut Value, p: &'a [Seg]) -> Option<(&'a mut Value, &'a Seg)> {
    let (last, init) = p.split_last()?;
    let mut cur = v;
    for s in init {
        cur = match s {
            Seg::Key(k) => cur.get_mut(k.as_str())?,
            Seg::Idx(i) => cur.get_mut(*i)?,
        };
    }
    Some((cur, last))
}

fn apply(doc: &mut Value, bytes: &mut Option<Vec<u8>>, op: &Op, what: &mut Vec<String>) {
    let mut all = Vec::new();
    paths(doc, &mut Vec::new(), &mut all);
    match op {
        Op::Drop(i) if !all.is_empty() => {
            let p = &all[i.index(all.len())];
            if let Some((parent, last)) = parent_mut(doc, p) {
                match (parent, last) {
                    (Value::Object(m), Seg::Key(k)) => {
                        m.remove(k);
                    }
                    (Value::Array(a), Seg::Idx(i)) if *i < a.len() => {
                        a.remove(*i);
                    }
                    _ => {}
                }
            }
            what.push(format!("drop {}", path_text(p)));
        }
        Op::Set(i, v) if !all.is_empty() => {
            let p = &all[i.index(all.len())];
            if let Some((parent, last)) = parent_mut(doc, p) {
                let slot = match last {
                    Seg::Key(k) => parent.get_mut(k.as_str()),
                    Seg::Idx(i) => parent.get_mut(*i),
                };
                if let Some(slot) = slot {
                    *slot = v.clone();
                }
            }
            what.push(format!("set {}", path_text(p)));
        }
        Op::Add(k, v) => {
            if let Value::Object(m) = doc {
                m.insert(k.clone(), v.clone());
            }
            what.push("add a field".into());
        }
        Op::Replace(v) => {
            *doc = v.clone();
            what.push("replace the body".into());
        }
        Op::Bytes(b) => {
            let mut out = bytes
                .take()
                .unwrap_or_else(|| serde_json::to_vec(doc).unwrap_or_default());
            damage(&mut out, b);
            what.push(format!("bytes {b:?}").chars().take(60).collect());
            *bytes = Some(out);
        }
        // A structural op on a document without fields: the whole body instead.
        Op::Drop(_) | Op::Set(..) => {
            *doc = Value::Null;
            what.push("null body".into());
        }
    }
}

fn damage(out: &mut Vec<u8>, b: &ByteOp) {
    let at = |i: &Index, len: usize| if len == 0 { 0 } else { i.index(len) };
    match b {
        ByteOp::Truncate(i) => out.truncate(at(i, out.len())),
        ByteOp::Flip(i, x) => {
            let n = at(i, out.len());
            if let Some(c) = out.get_mut(n) {
                *c ^= x;
            }
        }
        ByteOp::Insert(i, bytes) => {
            let n = at(i, out.len() + 1);
            out.splice(n..n, bytes.iter().copied());
        }
        ByteOp::Empty => out.clear(),
        ByteOp::NotUtf8(i) => {
            let n = at(i, out.len() + 1);
            out.splice(n..n, [0xff, 0xfe, 0xc3]);
        }
    }
}

/// Generates mutants deterministically from `seed`.
pub struct Fuzzer {
    runner: TestRunner,
}

impl Fuzzer {
    pub fn new(seed: u64) -> Self {
        let mut key = [0u8; 32];
        key[..8].copy_from_slice(&seed.to_le_bytes());
        let rng = TestRng::from_seed(RngAlgorithm::ChaCha, &key);
        Self {
            runner: TestRunner::new_with_rng(Config::default(), rng),
        }
    }

    /// One to three operations applied to `seed`.
    pub fn mutate(&mut self, seed: &Value) -> Mutant {
        let ops = vec(op(), 1..4)
            .new_tree(&mut self.runner)
            .map(|t| t.current())
            .unwrap_or_default();
        let mut doc = seed.clone();
        let mut bytes = None;
        let mut what = Vec::new();
        for o in &ops {
            apply(&mut doc, &mut bytes, o, &mut what);
        }
        let body = bytes.unwrap_or_else(|| serde_json::to_vec(&doc).unwrap_or_default());
        Mutant {
            body,
            what: what.join("; "),
        }
    }

    /// A generated JSON value (for bodies made from nothing).
    pub fn value(&mut self) -> Value {
        json_value()
            .new_tree(&mut self.runner)
            .map(|t| t.current())
            .unwrap_or(Value::Null)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_same_seed_makes_the_same_mutants() {
        let seed = json!({"a": 1, "b": {"c": [1, 2, "x"]}, "d": "text"});
        let run = |s| {
            let mut f = Fuzzer::new(s);
            (0..50).map(|_| f.mutate(&seed).body).collect::<Vec<_>>()
        };
        assert_eq!(run(7), run(7));
        assert_ne!(run(7), run(8));
    }

    #[test]
    fn mutants_differ_from_the_seed_in_many_ways() {
        let seed = json!({"a": 1, "b": {"c": [1, 2, "x"]}, "d": "text"});
        let original = serde_json::to_vec(&seed).expect("json");
        let mut f = Fuzzer::new(1);
        let mutants: Vec<Mutant> = (0..500).map(|_| f.mutate(&seed)).collect();
        let changed = mutants.iter().filter(|m| m.body != original).count();
        assert!(changed > 450, "{changed} of 500 changed");
        let not_json = mutants
            .iter()
            .filter(|m| serde_json::from_slice::<Value>(&m.body).is_err())
            .count();
        assert!(not_json > 20 && not_json < 300, "{not_json} not JSON");
        for kind in ["drop ", "set ", "add a field", "replace the body", "bytes "] {
            assert!(mutants.iter().any(|m| m.what.contains(kind)), "{kind}");
        }
    }
}
