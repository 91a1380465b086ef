//! Parsed identifiers. Handlers only ever see values that went through `parse()`: anything that
//! reaches a URL path is made of validated segments, so no path injection is possible.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {field}: {rule} (got {value:?})")]
pub struct IdError {
    pub field: &'static str,
    pub rule: &'static str,
    pub value: String,
}

fn id_err(field: &'static str, rule: &'static str, value: &str) -> IdError {
    let mut value = value.to_string();
    if value.len() > 200 {
        let mut cut = 200;
        while !value.is_char_boundary(cut) {
            cut -= 1;
        }
        value.truncate(cut);
        value.push('…');
    }
    IdError { field, rule, value }
}

/// A segment of an ARM path: non-empty, at most 260 chars, letters, digits and `-_.()`; `;` is
/// allowed because Recovery Services container and item names use it; never `.`/`..`.
fn valid_segment(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 260
        && s != "."
        && s != ".."
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '(' | ')' | ';'))
}

/// An Azure resource id:
/// `/subscriptions/{sub}/resourceGroups/{rg}/providers/{Namespace}/{type}/{name}[/{childType}/{childName}]*`.
///
/// Comparison is case-insensitive, as in ARM; `Display` keeps the original casing.
///
/// Held as one string in the form above (the keywords spelt as there, the segments as given):
/// a sweep keeps several ids per VM of a 100,000-VM fleet, so one allocation per id, not five.
/// Segments are validated at parse (no `/` inside one), so the parts are found by splitting.
#[derive(Clone, Eq)]
pub struct ResourceId {
    text: Box<str>,
}

/// Segments of `text` before the provider's first type: "", "subscriptions", sub,
/// "resourceGroups", rg, "providers", namespace.
const HEAD_SEGMENTS: usize = 7;

impl ResourceId {
    pub fn parse(s: &str) -> Result<Self, IdError> {
        const FIELD: &str = "resourceId";
        let rest = s
            .strip_prefix('/')
            .ok_or_else(|| id_err(FIELD, "must start with '/subscriptions/'", s))?;
        let parts: Vec<&str> = rest.split('/').collect();
        if parts.iter().any(|p| !valid_segment(p)) {
            return Err(id_err(
                FIELD,
                "every path segment must be non-empty, not '.' or '..', and only letters, digits and -_.();",
                s,
            ));
        }
        if parts.len() < 6
            || !parts[0].eq_ignore_ascii_case("subscriptions")
            || !parts[2].eq_ignore_ascii_case("resourceGroups")
            || !parts[4].eq_ignore_ascii_case("providers")
        {
            return Err(id_err(
                FIELD,
                "must look like /subscriptions/{id}/resourceGroups/{rg}/providers/{Namespace}/{type}/{name}",
                s,
            ));
        }
        let rest = &parts[6..];
        if rest.is_empty() || !rest.len().is_multiple_of(2) {
            return Err(id_err(FIELD, "types and names must come in pairs", s));
        }
        if !parts[5].contains('.') {
            return Err(id_err(
                FIELD,
                "provider namespace must be dotted, e.g. Microsoft.Compute",
                s,
            ));
        }
        let sub = parts[1];
        if uuid::Uuid::parse_str(sub).is_err() {
            return Err(id_err(FIELD, "subscription must be a GUID", s));
        }
        let mut text = String::with_capacity(s.len());
        text.push_str("/subscriptions/");
        text.push_str(sub);
        text.push_str("/resourceGroups/");
        text.push_str(parts[3]);
        text.push_str("/providers/");
        text.push_str(parts[5]);
        for segment in rest {
            text.push('/');
            text.push_str(segment);
        }
        Ok(Self {
            text: text.into_boxed_str(),
        })
    }

    /// Builds an id from parts (each validated like a parsed segment).
    pub fn new(
        subscription: &str,
        resource_group: &str,
        namespace: &str,
        types: &[(&str, &str)],
    ) -> Result<Self, IdError> {
        let mut s = format!(
            "/subscriptions/{subscription}/resourceGroups/{resource_group}/providers/{namespace}"
        );
        for (t, n) in types {
            s.push('/');
            s.push_str(t);
            s.push('/');
            s.push_str(n);
        }
        Self::parse(&s)
    }

    fn segment(&self, n: usize) -> &str {
        self.text.split('/').nth(n).unwrap_or("")
    }
    /// The (type, name) pairs' segments, top-level first.
    fn pair_segments(&self) -> impl Iterator<Item = &str> {
        self.text.split('/').skip(HEAD_SEGMENTS)
    }
    /// The id cut after its first `pairs` (type, name) pairs.
    fn truncated(&self, pairs: usize) -> ResourceId {
        let keep = HEAD_SEGMENTS + 2 * pairs;
        let end = self
            .text
            .match_indices('/')
            .nth(keep - 1)
            .map_or(self.text.len(), |(i, _)| i);
        ResourceId {
            text: self.text[..end].into(),
        }
    }

    pub fn subscription(&self) -> &str {
        self.segment(2)
    }
    pub fn resource_group(&self) -> &str {
        self.segment(4)
    }
    pub fn namespace(&self) -> &str {
        self.segment(6)
    }
    /// Full type, e.g. `Microsoft.Compute/virtualMachines/extensions`.
    pub fn full_type(&self) -> String {
        let mut t = self.namespace().to_string();
        for (ty, _) in self.types() {
            t.push('/');
            t.push_str(ty);
        }
        t
    }
    /// True when the full type matches, ignoring case.
    pub fn is_type(&self, full_type: &str) -> bool {
        self.full_type().eq_ignore_ascii_case(full_type)
    }
    /// Name of the last (deepest) resource.
    pub fn name(&self) -> &str {
        self.text.rsplit('/').next().unwrap_or("")
    }
    /// (type, name) pairs, top-level first.
    pub fn types(&self) -> impl Iterator<Item = (&str, &str)> {
        let mut segments = self.pair_segments();
        std::iter::from_fn(move || Some((segments.next()?, segments.next()?)))
    }
    fn depth(&self) -> usize {
        self.pair_segments().count() / 2
    }
    /// The top-level resource this one belongs to (itself when already top-level).
    pub fn top_level(&self) -> ResourceId {
        self.truncated(1)
    }
    /// The parent resource, if this is a child.
    pub fn parent(&self) -> Option<ResourceId> {
        let depth = self.depth();
        (depth > 1).then(|| self.truncated(depth - 1))
    }
    /// A child resource id.
    pub fn child(&self, child_type: &str, child_name: &str) -> Result<ResourceId, IdError> {
        if !valid_segment(child_type) || !valid_segment(child_name) {
            return Err(id_err(
                "resourceId",
                "child type and name must be valid path segments",
                child_name,
            ));
        }
        let text = format!("{}/{child_type}/{child_name}", self.text);
        Ok(ResourceId {
            text: text.into_boxed_str(),
        })
    }
    /// Lower-cased canonical form, for map keys and deterministic ids.
    pub fn canonical(&self) -> String {
        self.text.to_ascii_lowercase()
    }
    /// The resource group's own id.
    pub fn resource_group_id(&self) -> String {
        format!(
            "/subscriptions/{}/resourceGroups/{}",
            self.subscription(),
            self.resource_group()
        )
    }
}

impl PartialEq for ResourceId {
    fn eq(&self, other: &Self) -> bool {
        self.text.eq_ignore_ascii_case(&other.text)
    }
}

impl std::hash::Hash for ResourceId {
    /// Hashes the canonical form (as `PartialEq` compares), without building it.
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        for b in self.text.bytes() {
            state.write_u8(b.to_ascii_lowercase());
        }
        state.write_u8(0xff);
    }
}

impl fmt::Display for ResourceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl fmt::Debug for ResourceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ResourceId({self})")
    }
}

impl std::str::FromStr for ResourceId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl Serialize for ResourceId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ResourceId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// A Key Vault object URL: `https://{vault}.vault.azure.net/{secrets|keys}/{name}[/{version}]`
/// (sovereign clouds: `vault.azure.cn`, `vault.usgovcloudapi.net`, `vault.microsoftazure.de`;
/// `managedhsm.azure.net` for keys).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct KeyVaultUrl {
    url: String,
    vault: String,
    kind: KeyVaultObjectKind,
    name: String,
    version: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyVaultObjectKind {
    Secret,
    Key,
}

const VAULT_SUFFIXES: &[&str] = &[
    ".vault.azure.net",
    ".vault.azure.cn",
    ".vault.usgovcloudapi.net",
    ".vault.microsoftazure.de",
    ".managedhsm.azure.net",
];

impl KeyVaultUrl {
    pub fn parse(s: &str) -> Result<Self, IdError> {
        const FIELD: &str = "keyVaultUrl";
        if s.contains("/.") || s.contains('%') || s.contains('\\') {
            return Err(id_err(FIELD, "must not contain dot segments or escapes", s));
        }
        let url = url::Url::parse(s).map_err(|_| id_err(FIELD, "must be an absolute URL", s))?;
        if url.scheme() != "https" {
            return Err(id_err(FIELD, "must use https", s));
        }
        if url.query().is_some() || url.fragment().is_some() || !url.username().is_empty() {
            return Err(id_err(FIELD, "must not carry a query, fragment or user", s));
        }
        let host = url
            .host_str()
            .ok_or_else(|| id_err(FIELD, "must have a host", s))?
            .to_ascii_lowercase();
        let suffix = VAULT_SUFFIXES
            .iter()
            .find(|suf| host.ends_with(*suf))
            .ok_or_else(|| {
                id_err(
                    FIELD,
                    "host must be a Key Vault host (*.vault.azure.net)",
                    s,
                )
            })?;
        let vault = &host[..host.len() - suffix.len()];
        if vault.len() < 3
            || vault.len() > 24
            || !vault.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        {
            return Err(id_err(
                FIELD,
                "vault name must be 3-24 letters, digits or '-'",
                s,
            ));
        }
        let segs: Vec<&str> = url.path().trim_matches('/').split('/').collect();
        let kind = match segs.first().copied() {
            Some("secrets") => KeyVaultObjectKind::Secret,
            Some("keys") => KeyVaultObjectKind::Key,
            _ => return Err(id_err(FIELD, "path must start with /secrets/ or /keys/", s)),
        };
        let ok = |p: &str| {
            !p.is_empty()
                && p.len() <= 127
                && p.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        };
        let (name, version) = match segs.as_slice() {
            [_, name] if ok(name) => (name.to_string(), None),
            [_, name, ver] if ok(name) && ok(ver) => (name.to_string(), Some(ver.to_string())),
            _ => {
                return Err(id_err(
                    FIELD,
                    "must be /{secrets|keys}/{name}[/{version}] with letters, digits and '-'",
                    s,
                ))
            }
        };
        Ok(Self {
            url: s.trim_end_matches('/').to_string(),
            vault: vault.to_string(),
            kind,
            name,
            version,
        })
    }
    pub fn vault_name(&self) -> &str {
        &self.vault
    }
    pub fn kind(&self) -> KeyVaultObjectKind {
        self.kind
    }
    pub fn object_name(&self) -> &str {
        &self.name
    }
    pub fn version(&self) -> Option<&str> {
        self.version.as_deref()
    }
    pub fn as_str(&self) -> &str {
        &self.url
    }
}

impl fmt::Display for KeyVaultUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.url)
    }
}
impl fmt::Debug for KeyVaultUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyVaultUrl({})", self.url)
    }
}
impl Serialize for KeyVaultUrl {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.url)
    }
}
impl<'de> Deserialize<'de> for KeyVaultUrl {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// A ticketing system's id for a restore request: 1-64 chars of letters, digits and `-_.:`.
/// It is the idempotency key of the restore.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TicketId(String);

impl TicketId {
    pub fn parse(s: &str) -> Result<Self, IdError> {
        if s.is_empty()
            || s.len() > 64
            || !s
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':'))
            || s.starts_with('.')
        {
            return Err(id_err(
                "ticketId",
                "must be 1-64 characters of letters, digits and -_.: (not starting with '.')",
                s,
            ));
        }
        Ok(Self(s.to_string()))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
    /// Form safe for a state key segment (':' is not allowed in keys).
    pub fn key_segment(&self) -> String {
        self.0.replace(':', "=")
    }
}

impl fmt::Display for TicketId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
impl fmt::Debug for TicketId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TicketId({})", self.0)
    }
}
impl Serialize for TicketId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}
impl<'de> Deserialize<'de> for TicketId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// Deterministic ids: the same logical action always gets the same id (for Service Bus duplicate
/// detection, role-assignment names and state keys). UUIDv5 over a namespace private to ade-backup.
pub fn deterministic_uuid(parts: &[&str]) -> uuid::Uuid {
    const NS: uuid::Uuid = uuid::Uuid::from_u128(0x6a1d_e0b4_c4a7_4f0e_9b1e_2d3c_ade0_b4c1);
    uuid::Uuid::new_v5(&NS, parts.join("\u{1f}").as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    const VM: &str = "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rg-app/providers/Microsoft.Compute/virtualMachines/vm-1";

    #[test]
    fn parses_vm_and_child_ids() {
        let id = ResourceId::parse(VM).expect("valid");
        assert_eq!(id.subscription(), "00000000-0000-0000-0000-000000000001");
        assert_eq!(id.resource_group(), "rg-app");
        assert_eq!(id.name(), "vm-1");
        assert!(id.is_type("microsoft.compute/VIRTUALMACHINES"));
        let ext =
            ResourceId::parse(&format!("{VM}/extensions/AzureDiskEncryption")).expect("valid");
        assert!(ext.is_type("Microsoft.Compute/virtualMachines/extensions"));
        assert_eq!(ext.parent().expect("parent"), id);
        assert_eq!(
            ext.to_string(),
            format!("{VM}/extensions/AzureDiskEncryption")
        );
    }

    #[test]
    fn rejects_path_tricks_and_garbage() {
        for bad in [
            "",
            "subscriptions/x",
            &format!("{VM}/../../other"),
            &format!("{VM}/extensions/a%2f..%2fb"),
            &format!("{VM}?api-version=1"),
            &format!("{VM}/extensions"),
            "/subscriptions/not-a-guid/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/v",
            &format!("{VM}//x/y"),
            &format!("{VM}/extensions/a b"),
        ] {
            let err = ResourceId::parse(bad).expect_err(bad);
            assert_eq!(err.field, "resourceId");
        }
    }

    /// One string holds the id: every part, the parent, the top level and a child read back as
    /// the parts parsed; the keywords are spelt one way whatever casing came in.
    #[test]
    fn parts_parent_and_children_read_back_from_the_one_string() {
        let item = "/SUBSCRIPTIONS/00000000-0000-0000-0000-000000000001/resourcegroups/RG-b/PROVIDERS/Microsoft.RecoveryServices/vaults/rsv/backupFabrics/Azure/protectionContainers/c;1/protectedItems/vm;iaasvmcontainerv2;rg;vm1";
        let id = ResourceId::parse(item).expect("valid");
        assert_eq!(id.subscription(), "00000000-0000-0000-0000-000000000001");
        assert_eq!(id.resource_group(), "RG-b");
        assert_eq!(id.namespace(), "Microsoft.RecoveryServices");
        assert_eq!(id.name(), "vm;iaasvmcontainerv2;rg;vm1");
        assert_eq!(
            id.types().collect::<Vec<_>>(),
            vec![
                ("vaults", "rsv"),
                ("backupFabrics", "Azure"),
                ("protectionContainers", "c;1"),
                ("protectedItems", "vm;iaasvmcontainerv2;rg;vm1"),
            ]
        );
        assert_eq!(
            id.full_type(),
            "Microsoft.RecoveryServices/vaults/backupFabrics/protectionContainers/protectedItems"
        );
        assert!(id.to_string().starts_with(
            "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/RG-b/providers/"
        ));
        let vault = id.top_level();
        assert_eq!(
            vault.to_string(),
            "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/RG-b/providers/Microsoft.RecoveryServices/vaults/rsv"
        );
        assert_eq!(vault.top_level(), vault);
        assert!(vault.parent().is_none());
        let container = id.parent().expect("parent");
        assert_eq!(container.name(), "c;1");
        assert_eq!(
            container.parent().and_then(|f| f.parent()),
            Some(vault.clone())
        );
        let policy = vault
            .child("backupPolicies", "DefaultPolicy")
            .expect("child");
        assert_eq!(policy.parent(), Some(vault.clone()));
        assert_eq!(policy.name(), "DefaultPolicy");
        assert!(vault.child("a/b", "x").is_err());
        assert_eq!(
            id.resource_group_id(),
            "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/RG-b"
        );
    }

    /// Equal ids hash alike (map keys), whatever their casing; different ids do not collide on
    /// a shared prefix.
    #[test]
    fn equal_ids_hash_alike() {
        use std::collections::HashSet;
        let a = ResourceId::parse(VM).expect("valid");
        let b = ResourceId::parse(&VM.to_uppercase()).expect("valid");
        let c = a.child("extensions", "ade").expect("child");
        let set: HashSet<ResourceId> = [a.clone(), b, c.clone()].into_iter().collect();
        assert_eq!(set.len(), 2);
        assert!(set.contains(&a) && set.contains(&c));
        assert_eq!(a.canonical(), VM.to_ascii_lowercase());
    }

    #[test]
    fn equality_ignores_case() {
        let a = ResourceId::parse(VM).expect("valid");
        let b = ResourceId::parse(&VM.to_uppercase().replace("SUBSCRIPTIONS", "subscriptions"))
            .expect("valid");
        assert_eq!(a, b);
    }

    #[test]
    fn key_vault_urls() {
        let s = KeyVaultUrl::parse("https://kv-app-01.vault.azure.net/secrets/bek-1/0123abcd")
            .expect("valid");
        assert_eq!(s.vault_name(), "kv-app-01");
        assert_eq!(s.kind(), KeyVaultObjectKind::Secret);
        assert_eq!(s.version(), Some("0123abcd"));
        for bad in [
            "http://kv.vault.azure.net/secrets/a",
            "https://evil.example.com/secrets/a",
            "https://kv1.vault.azure.net/certificates/a",
            "https://kv1.vault.azure.net/secrets/a?sig=x",
            "https://kv1.vault.azure.net/secrets/../keys/a",
        ] {
            assert!(KeyVaultUrl::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn ticket_ids() {
        assert!(TicketId::parse("INC0012345").is_ok());
        assert!(TicketId::parse("JIRA:OPS-12").is_ok());
        for bad in ["", "a/b", "../x", &"x".repeat(65), "a b"] {
            assert_eq!(TicketId::parse(bad).expect_err(bad).field, "ticketId");
        }
    }

    #[test]
    fn deterministic_ids_are_stable() {
        assert_eq!(
            deterministic_uuid(&["a", "b"]),
            deterministic_uuid(&["a", "b"])
        );
        assert_ne!(deterministic_uuid(&["a", "b"]), deterministic_uuid(&["ab"]));
    }
}
