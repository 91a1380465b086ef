//! The published JSON Schema of restore requests (`schemas/restore-request.v1.schema.json`) and
//! the parser ade-backup runs (`restore_request::parse`) agree: every fixture under
//! `tests/fixtures/restore-requests/` goes through a real JSON Schema validator (the `jsonschema`
//! crate, draft 2020-12) and through the parser.
//!
//! - `accepted/`: both accept.
//! - `rejected/`: both reject. A fixture is named `{field}--{case}.json` (`message` for the message
//!   as a whole, `$` in a rejection); the parser must reject it on that field, and the schema only
//!   there (an error elsewhere would mean the fixture is wrong somewhere else too).
//! - `schema-cannot-tell/`: rules a JSON Schema cannot state, so the schema accepts and the parser
//!   rejects (on the named field): one field's subscription equal to another's (`cross-subscription`).
//!   The 64 KiB size limit is the other one (JSON Schema sees values, not bytes); its message is
//!   built here rather than stored. The rules that need configuration or Azure (the restore
//!   allowlist, a protected VM, its Key Vault, the staging account, the recovery point) come after
//!   parsing and are outside both; the schema's `$comment` lists them.

use ade_backup_functions::domain::restore_request::{parse, Rejection, MAX_REQUEST_BYTES};
use serde_json::Value;
use std::path::{Path, PathBuf};

/// The fields of a request, as fixture names spell them.
const FIELDS: [&str; 12] = [
    "message",
    "version",
    "ticketId",
    "vmResourceId",
    "recoveryPoint",
    "targetResourceGroup",
    "stagingStorageAccountId",
    "targetVmName",
    "targetSubnetId",
    "restoreType",
    "requestedBy",
    "replyTo",
];

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn validator() -> jsonschema::Validator {
    let path = repo().join("schemas/restore-request.v1.schema.json");
    let schema: Value =
        serde_json::from_slice(&std::fs::read(&path).expect("the schema")).expect("schema JSON");
    assert!(
        jsonschema::draft202012::meta::is_valid(&schema),
        "{} is not a valid draft 2020-12 schema",
        path.display()
    );
    jsonschema::draft202012::new(&schema).expect("the schema compiles")
}

/// The fixtures of one directory: (name, raw bytes), sorted by name.
fn fixtures(dir: &str) -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/restore-requests")
        .join(dir);
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| {
            let path = e.expect("a directory entry").path();
            let name = path
                .file_stem()
                .and_then(|s| s.to_str())
                .expect("a UTF-8 file name")
                .to_string();
            assert_eq!(
                path.extension().and_then(|x| x.to_str()),
                Some("json"),
                "{name}"
            );
            (name, std::fs::read(&path).expect("a fixture"))
        })
        .collect();
    out.sort();
    out
}

/// The field a fixture name promises (`{field}--{case}`), as the parser names it.
fn field_of(name: &str) -> &str {
    let field = name.split_once("--").map_or("", |(f, _)| f);
    let top = field.split('.').next().unwrap_or_default();
    assert!(FIELDS.contains(&top), "{name}: name it {{field}}--{{case}}");
    if field == "message" {
        "$"
    } else {
        field
    }
}

/// The schema's errors as (instance path, message); empty when valid.
fn schema_errors(v: &jsonschema::Validator, instance: &Value) -> Vec<(String, String)> {
    v.iter_errors(instance)
        .map(|e| (e.instance_path().to_string(), e.to_string()))
        .collect()
}

fn json(name: &str, body: &[u8]) -> Value {
    serde_json::from_slice(body).unwrap_or_else(|e| panic!("{name} is not JSON: {e}"))
}

fn check_all(failures: Vec<String>, total: usize, minimum: usize, what: &str) {
    assert!(total >= minimum, "only {total} fixtures {what}");
    assert!(
        failures.is_empty(),
        "{} of {total} fixtures {what} disagree:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// Runs every fixture of `all` through the parser, which must accept it (`parser_accepts`) or
/// reject it on the field its name promises, and through the schema, whose errors `schema_check`
/// judges. Fails with every disagreement at once.
fn check_fixtures(
    all: &[(String, Vec<u8>)],
    minimum: usize,
    what: &str,
    parser_accepts: bool,
    schema_check: impl Fn(&str, &Value, &[(String, String)]) -> Option<String>,
) {
    let v = validator();
    let mut failures = Vec::new();
    for (name, body) in all {
        let parser = match parse(body) {
            Ok(_) if parser_accepts => None,
            Ok(_) => Some("the parser accepts it".to_string()),
            Err(r) if parser_accepts => Some(format!("the parser rejects it: {r}")),
            Err(Rejection { field, rule, .. }) => (field != field_of(name)).then(|| {
                format!(
                    "the parser rejects it on {field} ({rule}), not {}",
                    field_of(name)
                )
            }),
        };
        let instance = json(name, body);
        let schema = schema_check(name, &instance, &schema_errors(&v, &instance));
        failures.extend(
            parser
                .into_iter()
                .chain(schema)
                .map(|f| format!("{name}: {f}")),
        );
    }
    check_all(failures, all.len(), minimum, what);
}

#[test]
fn schema_and_parser_accept_every_accepted_fixture() {
    check_fixtures(
        &fixtures("accepted"),
        40,
        "accepted",
        true,
        |_, _, errors| (!errors.is_empty()).then(|| format!("the schema rejects it: {errors:?}")),
    );
}

#[test]
fn schema_and_parser_reject_every_rejected_fixture_on_its_field() {
    check_fixtures(
        &fixtures("rejected"),
        120,
        "rejected",
        false,
        |name, instance, errors| {
            if errors.is_empty() {
                return Some("the schema accepts it".to_string());
            }
            // Errors at the field itself, or at the message when the field is missing or the message
            // is what is wrong.
            let field = field_of(name);
            let top = field.split('.').next().unwrap_or_default();
            let at_root_ok = field == "$" || instance.get(top).is_none();
            let elsewhere: Vec<_> = errors
                .iter()
                .filter(|(path, _)| {
                    !(path
                        .strip_prefix('/')
                        .is_some_and(|p| p.split('/').next() == Some(top))
                        || (path.is_empty() && at_root_ok))
                })
                .collect();
            (field != "$" && !elsewhere.is_empty())
                .then(|| format!("the schema also rejects it elsewhere: {elsewhere:?}"))
        },
    );
}

/// What JSON Schema cannot say: the schema accepts these, the parser rejects them on the named
/// field. Cross-field equality (`cross-subscription`: target, staging account and subnet in the
/// VM's subscription, its GUID spelled the same way) has no JSON Schema keyword; nor has a limit
/// on the message's bytes (64 KiB), checked on a message built here.
#[test]
fn rules_the_schema_cannot_state_are_the_parsers_alone() {
    let mut all = fixtures("schema-cannot-tell");
    let (_, full) = fixtures("accepted")
        .into_iter()
        .find(|(n, _)| n == "full")
        .expect("accepted/full.json");
    let mut padded = full.clone();
    padded.resize(MAX_REQUEST_BYTES + 1, b' ');
    all.push(("message--over-64-KiB".to_string(), padded));
    check_fixtures(&all, 5, "the schema cannot tell", false, |_, _, errors| {
        (!errors.is_empty())
            .then(|| format!("the schema rejects it now ({errors:?}): move it to rejected/"))
    });
}

/// Every string one character away from a valid value (a character deleted, replaced or inserted,
/// from an alphabet of the characters the rules care about), in every string field: schema and
/// parser agree on each, except where the parser refuses on a rule the schema cannot state.
#[test]
fn one_character_edits_of_every_field_agree() {
    let v = validator();
    let base = json(
        "accepted/minimal",
        &fixtures("accepted")
            .into_iter()
            .find(|(n, _)| n == "minimal")
            .expect("accepted/minimal.json")
            .1,
    );
    let get = |field: &str| base[field].as_str().unwrap_or_default().to_string();
    let (vm, rg, sa) = (
        get("vmResourceId"),
        get("targetResourceGroup"),
        get("stagingStorageAccountId"),
    );
    let subnet = format!(
        "{}/providers/Microsoft.Network/virtualNetworks/vnet-weu/subnets/restore",
        rg.replace("rg-restore", "rg-network")
    );
    let ids = "aF0-_.();/ {}:#";
    let words = "aZ0-_.:/ ;()\u{e9}";
    let times = "0123456789-:.TtZz +\u{2212}_";
    let cases: Vec<(&str, Option<&str>, String, &str)> = vec![
        ("ticketId", None, "INC:0_1.a-Z".into(), words),
        ("vmResourceId", None, vm, ids),
        ("recoveryPoint", None, "latest".into(), words),
        ("recoveryPoint", None, "rp-1".into(), words),
        (
            "recoveryPoint",
            Some("before"),
            "2024-02-29T23:59:60.5+23:59".into(),
            times,
        ),
        (
            "recoveryPoint",
            Some("before"),
            "2023-12-31 00:00:00Z".into(),
            times,
        ),
        (
            "recoveryPoint",
            Some("before"),
            "2000-02-29t10:09:08.123\u{2212}01:30".into(),
            times,
        ),
        ("targetResourceGroup", None, rg, ids),
        ("stagingStorageAccountId", None, sa, ids),
        ("targetVmName", None, "vm_1-a".into(), words),
        ("targetSubnetId", None, subnet, ids),
        ("restoreType", None, "restoreDisks".into(), words),
        ("replyTo", None, "q.1_a-b".into(), words),
    ];
    let (mut failures, mut checked) = (Vec::new(), 0);
    for (field, inner, value, alphabet) in cases {
        for edited in one_character_edits(&value, alphabet) {
            let mut request = base.clone();
            request[field] = match inner {
                Some(key) => serde_json::json!({ key: edited }),
                None => Value::String(edited.clone()),
            };
            let body = serde_json::to_vec(&request).expect("JSON");
            let parsed = parse(&body);
            if parsed
                .as_ref()
                .is_err_and(|r| r.code == "cross-subscription")
            {
                continue;
            }
            checked += 1;
            let schema_ok = v.is_valid(&request);
            if schema_ok != parsed.is_ok() {
                failures.push(format!(
                    "{field} = {edited:?}: the schema {}, the parser {}",
                    if schema_ok { "accepts" } else { "rejects" },
                    parsed.map_or_else(|r| format!("rejects ({r})"), |_| "accepts".into())
                ));
            }
        }
    }
    check_all(failures, checked, 5000, "one character away from valid");
}

fn one_character_edits(s: &str, alphabet: &str) -> Vec<String> {
    let chars: Vec<char> = s.chars().collect();
    let with = |i: usize, skip: usize, c: Option<char>| -> String {
        chars[..i]
            .iter()
            .copied()
            .chain(c)
            .chain(chars[i + skip..].iter().copied())
            .collect()
    };
    let mut out = Vec::new();
    for i in 0..=chars.len() {
        if i < chars.len() {
            out.push(with(i, 1, None));
            out.extend(alphabet.chars().map(|c| with(i, 1, Some(c))));
        }
        out.extend(alphabet.chars().map(|c| with(i, 0, Some(c))));
    }
    out
}
