//! Which vault URLs the client talks to, and where a request for one goes.
//!
//! A [`VaultUrl`] is `https://{vault}{suffix}/` with `{suffix}` one of the Key Vault DNS suffixes
//! the caller allows ([`KEY_VAULT_DNS_SUFFIXES`] by default: public Azure and the sovereign
//! clouds), a 3-24 character vault name, no path, query, fragment, user or port other than 443.
//! Against the simulator, requests for that URL go to `{endpoint}/{vault}/...` instead (the
//! endpoint is set only where ARM itself points at the simulator); the URL rules stay the same.

use super::KeyVaultError;
use url::Url;

/// Key Vault DNS suffixes: public, China, US Government, Germany (legacy) clouds
/// (learn.microsoft.com/azure/key-vault/general/about-keys-secrets-certificates, "DNS suffixes").
pub const KEY_VAULT_DNS_SUFFIXES: &[&str] = &[
    ".vault.azure.net",
    ".vault.azure.cn",
    ".vault.usgovcloudapi.net",
    ".vault.microsoftazure.de",
];

/// A validated vault base URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VaultUrl {
    url: Url,
    vault: String,
}

impl VaultUrl {
    /// `s` must be a vault base URL under one of `suffixes` (see the module docs).
    pub fn parse(s: &str, suffixes: &[String]) -> Result<Self, KeyVaultError> {
        const FIELD: &str = "vaultUrl";
        let url =
            Url::parse(s).map_err(|_| KeyVaultError::invalid(FIELD, "must be an absolute URL"))?;
        if url.scheme() != "https" {
            return Err(KeyVaultError::invalid(FIELD, "must use https"));
        }
        if url.query().is_some()
            || url.fragment().is_some()
            || !url.username().is_empty()
            || url.password().is_some()
        {
            return Err(KeyVaultError::invalid(
                FIELD,
                "must not carry a query, fragment or user",
            ));
        }
        if url.port().is_some_and(|p| p != 443) {
            return Err(KeyVaultError::invalid(
                FIELD,
                "must not name a port other than 443",
            ));
        }
        if url.path() != "/" {
            return Err(KeyVaultError::invalid(
                FIELD,
                "must be the vault's base URL, without a path",
            ));
        }
        let host = url.host_str().unwrap_or_default().to_ascii_lowercase();
        let Some(vault) = suffixes
            .iter()
            .find_map(|suf| host.strip_suffix(&suf.to_ascii_lowercase()))
        else {
            return Err(KeyVaultError::invalid(
                FIELD,
                format!(
                    "host must end in a configured Key Vault DNS suffix ({})",
                    suffixes.join(", ")
                ),
            ));
        };
        if vault.len() < 3
            || vault.len() > 24
            || !vault.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        {
            return Err(KeyVaultError::invalid(
                FIELD,
                "vault name must be 3-24 letters, digits or '-'",
            ));
        }
        let vault = vault.to_string();
        let mut url = url;
        let _ = url.set_port(None);
        Ok(Self { url, vault })
    }

    /// The vault's name (the first DNS label).
    pub fn vault_name(&self) -> &str {
        &self.vault
    }

    pub fn as_str(&self) -> &str {
        self.url.as_str()
    }

    /// The URL of `segments` under this vault with `?api-version=`, or under `endpoint/{vault}/`
    /// when an endpoint override is set. Every segment must be a Key Vault object name
    /// (1-127 letters, digits or '-') or one of the literal operation segments.
    pub(crate) fn request_url(
        &self,
        endpoint: Option<&Url>,
        segments: &[&str],
        api_version: &str,
    ) -> Result<Url, KeyVaultError> {
        for s in segments {
            let ok = !s.is_empty()
                && s.len() <= 127
                && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
            if !ok {
                return Err(KeyVaultError::invalid(
                    "name",
                    "must be 1-127 letters, digits or '-'",
                ));
            }
        }
        let (mut url, prefix) = match endpoint {
            Some(base) => (base.clone(), {
                let mut p: Vec<String> = base
                    .path_segments()
                    .into_iter()
                    .flatten()
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .collect();
                p.push(self.vault.clone());
                p
            }),
            None => (self.url.clone(), Vec::new()),
        };
        url.path_segments_mut()
            .map_err(|_| KeyVaultError::invalid("endpoint", "cannot take a path"))?
            .clear()
            .extend(prefix.iter())
            .extend(segments.iter());
        url.query_pairs_mut()
            .clear()
            .append_pair("api-version", api_version);
        Ok(url)
    }
}

impl std::fmt::Display for VaultUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.url.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn suffixes() -> Vec<String> {
        KEY_VAULT_DNS_SUFFIXES
            .iter()
            .map(|s| s.to_string())
            .collect()
    }

    #[test]
    fn accepts_vault_base_urls_of_the_configured_clouds() {
        for ok in [
            "https://kv-app.vault.azure.net/",
            "https://KV-App.vault.azure.net",
            "https://kv-app.vault.usgovcloudapi.net:443/",
            "https://kvcn1.vault.azure.cn/",
        ] {
            let v = VaultUrl::parse(ok, &suffixes()).expect(ok);
            assert!(v.as_str().starts_with("https://kv"), "{v}");
            assert!(!v.as_str().contains(":443"), "{v}");
        }
    }

    #[test]
    fn refuses_what_is_not_a_vault_base_url() {
        for (bad, rule) in [
            ("http://kv-app.vault.azure.net/", "https"),
            ("https://kv-app.vault.azure.net.evil.example/", "DNS suffix"),
            ("https://evil.example/?x=kv-app.vault.azure.net", "query"),
            ("https://kv-app.vault.azure.net/secrets/x", "without a path"),
            ("https://kv-app.vault.azure.net:8443/", "port"),
            ("https://user@kv-app.vault.azure.net/", "user"),
            ("https://k.vault.azure.net/", "3-24"),
            ("https://127.0.0.1/", "DNS suffix"),
        ] {
            let e = VaultUrl::parse(bad, &suffixes()).expect_err(bad);
            assert!(e.to_string().contains(rule), "{bad}: {e}");
        }
        // Only the configured suffixes: a deployment limited to public Azure refuses the others.
        let public = vec![".vault.azure.net".to_string()];
        assert!(VaultUrl::parse("https://kvcn1.vault.azure.cn/", &public).is_err());
    }

    #[test]
    fn request_urls_stay_under_the_vault_or_the_endpoint() {
        let v = VaultUrl::parse("https://kv-app.vault.azure.net/", &suffixes()).expect("url");
        let u = v
            .request_url(None, &["secrets", "restore"], "7.5")
            .expect("url");
        assert_eq!(
            u.as_str(),
            "https://kv-app.vault.azure.net/secrets/restore?api-version=7.5"
        );
        let sim = Url::parse("http://127.0.0.1:9/_keyvault/").expect("sim");
        let u = v
            .request_url(Some(&sim), &["secrets", "s1", "v1"], "7.5")
            .expect("url");
        assert_eq!(
            u.as_str(),
            "http://127.0.0.1:9/_keyvault/kv-app/secrets/s1/v1?api-version=7.5"
        );
        for bad in ["..", "a/b", "", "a?b", "a%2fb"] {
            assert!(
                v.request_url(None, &["secrets", bad], "7.5").is_err(),
                "{bad}"
            );
        }
    }
}
