//! Azure Resource Graph 2022-10-01 `POST /providers/Microsoft.ResourceGraph/resources`.
//! Implements exactly the KQL subset in docs/arm-surface.md: `table | where <path> =~ 'lit'
//! [and <path> in~ ('a','b') ...] [| project a, b, alias = path]`, paged by `$top`/`$skipToken`.
//! Shapes: resourcegraph examples `ResourcesBasicQuery.json`, `ResourcesFirstPageQuery.json`,
//! `ResourcesNextPageQuery.json`.

mod table;

use self::table::table_refs;
pub use self::table::RowRef;
use super::{route, Ctx, Reply, Route};
use crate::world::{lc, World};
use axum::http::{Method, StatusCode};
use chrono::{DateTime, Utc};
use serde_json::{json, Map, Value};
use std::collections::BTreeSet;
use std::sync::Arc;

const API: Option<&str> = Some("2022-10-01");

pub fn routes() -> Vec<Route> {
    vec![route(
        Method::POST,
        "providers/microsoft.resourcegraph/resources",
        "resourceGraph.query",
        API,
        query,
    )]
}

#[derive(Debug, Clone, PartialEq)]
pub enum Cond {
    Eq(String, String),
    In(String, Vec<String>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Query {
    pub table: String,
    pub conds: Vec<Cond>,
    pub project: Option<Vec<(String, String)>>,
}

/// Split on `sep` outside single quotes.
fn split_outside_quotes<'a>(s: &'a str, sep: &str) -> Vec<&'a str> {
    let mut out = Vec::new();
    let mut in_q = false;
    let mut start = 0;
    let lower = s.to_ascii_lowercase();
    let bytes = s.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\'' {
            in_q = !in_q;
        } else if !in_q && lower[i..].starts_with(sep) {
            out.push(&s[start..i]);
            i += sep.len();
            start = i;
            continue;
        }
        i += 1;
    }
    out.push(&s[start..]);
    out
}

fn literal(s: &str) -> Result<String, String> {
    let t = s.trim();
    t.strip_prefix('\'')
        .and_then(|r| r.strip_suffix('\''))
        .map(str::to_string)
        .ok_or_else(|| format!("expected a single-quoted literal, found `{t}`"))
}

/// Separates the segments of a parsed property path (a tag key may contain `.`).
const SEP: char = '\u{1f}';

/// `a.b.c`, with `['key']` segments for keys that are not identifiers (`tags['cost-center']`).
fn path(s: &str) -> Result<String, String> {
    let t = s.trim();
    let bad = || format!("`{t}` is not a property path");
    let mut segs: Vec<String> = Vec::new();
    let mut rest = t;
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix("['") {
            let end = r.find("']").ok_or_else(bad)?;
            let key = &r[..end];
            if key.is_empty() || key.contains('\'') {
                return Err(bad());
            }
            segs.push(key.to_string());
            rest = &r[end + 2..];
            rest = rest.strip_prefix('.').unwrap_or(rest);
        } else {
            let end = rest.find(['.', '[']).unwrap_or(rest.len());
            let ident = &rest[..end];
            if ident.is_empty() || !ident.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(bad());
            }
            segs.push(ident.to_string());
            rest = &rest[end..];
            rest = rest.strip_prefix('.').unwrap_or(rest);
        }
    }
    if segs.is_empty() {
        return Err(bad());
    }
    Ok(segs.join(&SEP.to_string()))
}

pub fn parse(q: &str) -> Result<Query, String> {
    let stages = split_outside_quotes(q, "|");
    let table = stages[0].trim().to_ascii_lowercase();
    if ![
        "resources",
        "recoveryservicesresources",
        "authorizationresources",
    ]
    .contains(&table.as_str())
    {
        return Err(format!("table `{table}` is not supported (resources, recoveryservicesresources, authorizationresources)"));
    }
    let mut conds = Vec::new();
    let mut project = None;
    for stage in &stages[1..] {
        let st = stage.trim();
        let lower = st.to_ascii_lowercase();
        if let Some(rest) = lower.strip_prefix("where ").map(|_| &st[6..]) {
            for clause in split_outside_quotes(rest, " and ") {
                let c = clause.trim();
                if let Some((l, r)) = c.split_once("=~") {
                    conds.push(Cond::Eq(path(l)?, literal(r)?));
                } else if let Some((l, r)) = c.split_once("in~") {
                    let r = r.trim();
                    let inner = r
                        .strip_prefix('(')
                        .and_then(|x| x.strip_suffix(')'))
                        .ok_or_else(|| format!("in~ needs a parenthesised list, found `{r}`"))?;
                    let items = split_outside_quotes(inner, ",")
                        .into_iter()
                        .map(literal)
                        .collect::<Result<Vec<_>, _>>()?;
                    conds.push(Cond::In(path(l)?, items));
                } else {
                    return Err(format!("where clause `{c}` must be `<path> =~ '<literal>'` or `<path> in~ ('a','b')`"));
                }
            }
        } else if lower.starts_with("project ") {
            let mut cols = Vec::new();
            for col in st[8..].split(',') {
                match col.split_once('=') {
                    Some((alias, p)) => cols.push((path(alias)?, path(p)?)),
                    None => {
                        let p = path(col)?;
                        let alias = p.rsplit(SEP).next().unwrap_or(&p).to_string();
                        cols.push((alias, p));
                    }
                }
            }
            project = Some(cols);
        } else {
            return Err(format!(
                "operator in `{st}` is not supported (where, project)"
            ));
        }
    }
    Ok(Query {
        table,
        conds,
        project,
    })
}

fn lookup<'a>(row: &'a Value, p: &str) -> Option<&'a Value> {
    let mut cur = row;
    for part in p.split(SEP) {
        let obj = cur.as_object()?;
        cur = obj.get(part).or_else(|| {
            obj.iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(part))
                .map(|(_, v)| v)
        })?;
    }
    Some(cur)
}

fn value_str(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
fn matches(row: &Value, conds: &[Cond]) -> bool {
    conds
        .iter()
        .all(|c| cond_holds(c, lookup(row, cond_path(c))))
}

/// Whether a condition holds for the value at its path (`None`: the row has no such property).
fn cond_holds(c: &Cond, v: Option<&Value>) -> bool {
    let Some(v) = v else { return false };
    let s = value_str(v);
    match c {
        Cond::Eq(_, lit) => s.eq_ignore_ascii_case(lit),
        Cond::In(_, lits) => lits.iter().any(|l| l.eq_ignore_ascii_case(&s)),
    }
}

fn fnv(s: &str) -> u64 {
    s.bytes().fold(0xcbf29ce484222325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100000001b3)
    })
}

fn invalid_query(detail: String) -> Reply {
    Reply::json(
        StatusCode::BAD_REQUEST,
        json!({"error": {
            "code": "BadRequest",
            "message": "Please provide below info when asking for support: timestamp = (simulated), correlationId = (simulated).",
            "details": [
                {"code": "InvalidQuery", "message": "Query is invalid. Please refer to the documentation for the Azure Resource Graph service and fix the error before retrying."},
                {"code": "ParserFailure", "message": detail}
            ]
        }}),
    )
}

/// A Resource Graph query: parse the KQL subset, take the rows of the subscriptions (and
/// management groups) asked for, and serve one page of them with a `$skipToken` for the next.
fn query(w: &mut World, ctx: &Ctx) -> Reply {
    let body = match ctx.json_body() {
        Ok(b) => b,
        Err(r) => return r,
    };
    let Some(text) = body["query"].as_str() else {
        return invalid_query("body.query is required".into());
    };
    let q = match parse(text) {
        Ok(q) => q,
        Err(e) => return invalid_query(e),
    };
    let opts = &body["options"];
    let top = opts["$top"].as_u64().unwrap_or(100).clamp(1, 1000) as usize;
    let qhash = fnv(text);
    let (offset, snapshot) = match page_start(opts, qhash) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let cached = snapshot.and_then(|id| {
        w.graph_snapshots
            .iter()
            .find(|(s, _)| *s == id)
            .map(|(_, refs)| refs.clone())
    });
    let reused = cached.is_some();
    let refs = match cached {
        Some(refs) => refs,
        None => Arc::new(matching_refs(w, &q, query_subscriptions(w, &body), ctx.now)),
    };
    let total = refs.len();
    let end = (offset + top).min(total);
    // Only this page's rows are rendered (a row whose resource went away since the first page
    // is left out, as Resource Graph's own view lags deletions).
    let page: Vec<Value> = refs
        .iter()
        .skip(offset)
        .take(end.saturating_sub(offset))
        .filter_map(|r| r.render(w, ctx.now))
        .map(|r| project(r, q.project.as_deref()))
        .collect();
    let mut out = json!({
        "totalRecords": total,
        "count": page.len(),
        "data": page,
        "facets": [],
        "resultTruncated": "false"
    });
    if end >= total {
        // The last page: nobody continues this snapshot.
        if let Some(id) = snapshot {
            w.graph_snapshots.retain(|(s, _)| *s != id);
        }
    } else {
        let snap = match snapshot.filter(|_| reused) {
            Some(id) => id,
            None => keep_snapshot(w, refs),
        };
        out["$skipToken"] = json!(format!("{end}.{qhash:x}.{snap:x}"));
    }
    Reply::ok(out)
}

/// The subscriptions a query is limited to: `subscriptions`, plus every subscription under
/// any of `managementGroups` (ResourcesMgBasicQuery.json); `None` for all of them.
fn query_subscriptions(w: &World, body: &Value) -> Option<BTreeSet<String>> {
    let mut subs: Option<BTreeSet<String>> = body["subscriptions"]
        .as_array()
        .filter(|a| !a.is_empty())
        .map(|a| a.iter().filter_map(|s| s.as_str()).map(lc).collect());
    if let Some(mgs) = body["managementGroups"]
        .as_array()
        .filter(|a| !a.is_empty())
    {
        let wanted: BTreeSet<String> = mgs.iter().filter_map(|m| m.as_str()).map(lc).collect();
        let under: BTreeSet<String> = w
            .subscriptions
            .values()
            .filter(|s| s.management_groups.iter().any(|m| wanted.contains(&lc(m))))
            .map(|s| lc(&s.id))
            .collect();
        subs = Some(subs.unwrap_or_default().union(&under).cloned().collect());
    }
    subs
}

/// Where a page starts, and the snapshot it continues. `$skipToken` =
/// `{offset}.{query hash}.{snapshot}`: a continuation page is served from the result the first
/// page computed (a consistent view across pages, and 10,000 rows are not re-rendered for each
/// of their pages). A snapshot that was evicted is recomputed. Without a token, `$skip`.
fn page_start(opts: &Value, qhash: u64) -> Result<(usize, Option<u64>), Reply> {
    let Some(tok) = opts["$skipToken"].as_str() else {
        return Ok((opts["$skip"].as_u64().unwrap_or(0) as usize, None));
    };
    let mut parts = tok.split('.');
    let parsed = (|| {
        let o = parts.next()?.parse::<usize>().ok()?;
        let h = u64::from_str_radix(parts.next()?, 16).ok()?;
        let snap = parts.next().and_then(|s| u64::from_str_radix(s, 16).ok());
        Some((o, h, snap))
    })();
    match parsed {
        Some((o, h, snap)) if h == qhash => Ok((o, snap)),
        _ => Err(invalid_query(format!(
            "options.$skipToken '{tok}' does not belong to this query"
        ))),
    }
}

/// The query's result, unrendered: the table's rows in `subs` that match its conditions. The
/// subscription and a `type` condition are decided without rendering the row; a row is
/// rendered (and dropped again) only when another condition needs its properties.
fn matching_refs(
    w: &World,
    q: &Query,
    subs: Option<BTreeSet<String>>,
    now: DateTime<Utc>,
) -> Vec<RowRef> {
    let (by_type, by_row): (Vec<&Cond>, Vec<&Cond>) =
        q.conds.iter().partition(|c| cond_path(c) == "type");
    table_refs(w, &q.table)
        .into_iter()
        .filter(|r| {
            let Some(sub) = r.subscription(w) else {
                return false;
            };
            if subs.as_ref().is_some_and(|s| !s.contains(&lc(sub))) {
                return false;
            }
            let rtype = Value::String(r.rtype(w));
            if !by_type.iter().all(|c| cond_holds(c, Some(&rtype))) {
                return false;
            }
            by_row.is_empty()
                || r.render(w, now).is_some_and(|row| {
                    by_row
                        .iter()
                        .all(|c| cond_holds(c, lookup(&row, cond_path(c))))
                })
        })
        .collect()
}

fn cond_path(c: &Cond) -> &str {
    match c {
        Cond::Eq(p, _) | Cond::In(p, _) => p,
    }
}

/// A row's columns as the query's `project` names them (the whole row without one).
fn project(row: Value, cols: Option<&[(String, String)]>) -> Value {
    let Some(cols) = cols else { return row };
    let mut m = Map::new();
    for (alias, p) in cols {
        m.insert(
            alias.clone(),
            lookup(&row, p).cloned().unwrap_or(Value::Null),
        );
    }
    Value::Object(m)
}

/// Keep a result for its continuation pages; returns the snapshot's id. A few concurrent paged
/// queries at most: older snapshots are recomputed if their continuation ever comes.
fn keep_snapshot(w: &mut World, refs: Arc<Vec<RowRef>>) -> u64 {
    let id = w.new_snapshot_id();
    if w.graph_snapshots.len() >= 16 {
        w.graph_snapshots.pop_front();
    }
    w.graph_snapshots.push_back((id, refs));
    id
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_queries() {
        let q = parse("resources | where type =~ 'microsoft.compute/virtualmachines/extensions' and properties.publisher =~ 'Microsoft.Azure.Security'").expect("parses");
        assert_eq!(q.table, "resources");
        assert_eq!(q.conds.len(), 2);
        let q = parse("authorizationresources | where type =~ 'microsoft.authorization/roleassignments' and properties.principalId in~ ('a','b') | project id, pid = properties.principalId").expect("parses");
        assert_eq!(
            q.conds[1],
            Cond::In(
                format!("properties{SEP}principalId"),
                vec!["a".into(), "b".into()]
            )
        );
        assert_eq!(
            q.project.expect("project")[1],
            ("pid".into(), format!("properties{SEP}principalId"))
        );
    }

    #[test]
    fn tag_keys_in_brackets_match_rows() {
        let q = parse("resources | where type =~ 'microsoft.compute/virtualmachines' and tags['cost-center'] =~ 'CC.1' and tags.env =~ 'prod'").expect("parses");
        let row = json!({"type": "microsoft.compute/virtualmachines", "tags": {"cost-center": "cc.1", "env": "Prod"}});
        assert!(matches(&row, &q.conds));
        let other = json!({"type": "microsoft.compute/virtualmachines", "tags": {"cost-center": "cc.2", "env": "prod"}});
        assert!(!matches(&other, &q.conds));
        for bad in ["tags['']", "tags['a", "tags[a]", "a..b"] {
            assert!(path(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn rejects_what_is_outside_the_subset() {
        assert!(parse("resources | summarize count()").is_err());
        assert!(parse("resources | where type == 'x'").is_err());
        assert!(parse("securityresources").is_err());
    }

    /// The lazy table gives what rendering every row and filtering would: the same rows, in
    /// the same order, for a type-only query and for one with a property condition.
    #[test]
    fn lazy_matching_gives_the_rows_a_full_render_would() {
        let fleet = crate::Fleet::generate(2, 30, 7);
        let now = Utc::now();
        let w = World::from_fleet(&fleet, now, Default::default());
        let queries = [
            "resources | where type =~ 'microsoft.compute/virtualmachines'",
            "resources | where type =~ 'microsoft.compute/virtualmachines/extensions' and properties.publisher =~ 'Microsoft.Azure.Security'",
            "resources | where type =~ 'microsoft.keyvault/vaults'",
            "recoveryservicesresources | where type =~ 'microsoft.recoveryservices/vaults/backupfabrics/protectioncontainers/protecteditems'",
        ];
        for text in queries {
            let q = parse(text).expect("parses");
            let lazy: Vec<Value> = matching_refs(&w, &q, None, now)
                .iter()
                .filter_map(|r| r.render(&w, now))
                .collect();
            let full: Vec<Value> = table_refs(&w, &q.table)
                .iter()
                .filter_map(|r| r.render(&w, now))
                .filter(|r| matches(r, &q.conds))
                .collect();
            assert!(!full.is_empty() || text.starts_with("recovery"), "{text}");
            assert_eq!(lazy, full, "{text}");
        }
        let sub = lc(&fleet.subscriptions[0].id);
        let q = parse(queries[0]).expect("parses");
        let one = matching_refs(&w, &q, Some(BTreeSet::from([sub.clone()])), now);
        assert!(one
            .iter()
            .all(|r| r.subscription(&w).map(lc) == Some(sub.clone())));
        assert!(!one.is_empty() && one.len() < matching_refs(&w, &q, None, now).len());
    }

    #[test]
    fn quoted_separators_do_not_split() {
        let q = parse("resources | where name =~ 'a and b|c'").expect("parses");
        assert_eq!(q.conds, vec![Cond::Eq("name".into(), "a and b|c".into())]);
    }
}
