//! What the policy sweep looks at: subscriptions and/or management groups (Resource Graph
//! scopes) and an optional VM tag filter. The filter is turned into KQL here, so only values
//! that cannot break out of a quoted literal are accepted.

use std::collections::BTreeMap;

/// `ADE_BACKUP_SWEEP_TAGS`: `key=value[,key=value...]`. A VM is in scope when it has every listed
/// tag with the listed value (values compare case-insensitively, like KQL's `=~`). Empty: every
/// VM.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TagFilter {
    pairs: Vec<(String, String)>,
}

/// Azure's tag limits (name 512, value 256 characters); `<>%&\?/` are not allowed in names.
const MAX_KEY: usize = 512;
const MAX_VALUE: usize = 256;

impl TagFilter {
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut pairs = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let Some((k, v)) = part.split_once('=') else {
                return Err(format!("each entry must be key=value, {part:?} has no '='"));
            };
            let (k, v) = (k.trim(), v.trim());
            if k.is_empty() || k.len() > MAX_KEY {
                return Err(format!("tag name {k:?} must be 1 to {MAX_KEY} characters"));
            }
            if let Some(c) = k.chars().find(|c| {
                matches!(
                    c,
                    '<' | '>' | '%' | '&' | '\\' | '?' | '/' | '\'' | '[' | ']'
                ) || c.is_control()
            }) {
                return Err(format!("tag name {k:?} must not contain {c:?}"));
            }
            if v.len() > MAX_VALUE {
                return Err(format!(
                    "tag value for {k:?} must be at most {MAX_VALUE} characters"
                ));
            }
            if let Some(c) = v
                .chars()
                .find(|c| matches!(c, '\'' | '\\') || c.is_control())
            {
                return Err(format!("tag value for {k:?} must not contain {c:?}"));
            }
            pairs.push((k.to_string(), v.to_string()));
        }
        Ok(Self { pairs })
    }

    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }

    /// ` and tags['k'] =~ 'v' ...` to append to a `where` clause (empty when no filter).
    pub fn kql_conditions(&self) -> String {
        self.pairs
            .iter()
            .map(|(k, v)| format!(" and tags['{k}'] =~ '{v}'"))
            .collect()
    }

    /// The same test on a VM's tags (names compare exactly, values case-insensitively).
    pub fn matches(&self, tags: &BTreeMap<String, String>) -> bool {
        self.pairs.iter().all(|(k, v)| {
            tags.get(k)
                .is_some_and(|actual| actual.eq_ignore_ascii_case(v))
        })
    }
}

impl std::fmt::Display for TagFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parts: Vec<String> = self.pairs.iter().map(|(k, v)| format!("{k}={v}")).collect();
        f.write_str(&parts.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_become_kql_and_match_like_it() {
        let f = TagFilter::parse(" backup = ade , cost-center=CC.1").expect("parses");
        assert_eq!(
            f.kql_conditions(),
            " and tags['backup'] =~ 'ade' and tags['cost-center'] =~ 'CC.1'"
        );
        let mut tags = BTreeMap::new();
        tags.insert("backup".to_string(), "ADE".to_string());
        assert!(!f.matches(&tags), "cost-center missing");
        tags.insert("cost-center".to_string(), "cc.1".to_string());
        assert!(f.matches(&tags));
        assert!(TagFilter::parse("").expect("empty").is_empty());
        assert_eq!(f.to_string(), "backup=ade,cost-center=CC.1");
    }

    #[test]
    fn anything_that_could_leave_the_literal_is_refused_with_the_rule() {
        for (bad, rule) in [
            ("backup", "no '='"),
            ("=ade", "1 to 512"),
            ("a'b=x", "must not contain '\\''"),
            ("a=x'y", "must not contain '\\''"),
            ("a=x\\", "must not contain '\\\\'"),
            ("a]=x", "must not contain ']'"),
            ("a/b=x", "must not contain '/'"),
        ] {
            let err = TagFilter::parse(bad).expect_err(bad);
            assert!(err.contains(rule), "{bad}: {err}");
        }
        let long = format!("k={}", "v".repeat(257));
        assert!(TagFilter::parse(&long).is_err());
    }
}
