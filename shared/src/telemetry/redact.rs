//! Redaction: every text that leaves the process (log lines, the custom handler's `Logs` and
//! error responses, dead-letter records, status messages to ticketing systems) passes through
//! [`redact`]: SAS signatures in any encoding, bearer tokens and JWTs, client secrets, shared
//! keys, passwords and connection-string keys become `[REDACTED]`. [`RedactingMakeWriter`] puts
//! it between the log formatter and stderr.

use super::REDACTED;
use regex::{Captures, Regex};
use std::borrow::Cow;
use std::io::{self, Write};
use std::sync::LazyLock;
use tracing_subscriber::fmt::MakeWriter;

/// A secret value: runs until a character that ends it in free text, a URL or a JSON-escaped
/// string, and never starts with `[` (so already-redacted text is left alone) or `{` (a JSON
/// object under a secret's name, e.g. a template's `"adminPassword": {"type": ...}`, is a
/// declaration, not a value).
const VALUE: &str = r#"[^\s"'<>\\,;&)}\]\[{][^\s"'<>\\,;&)}\]]*"#;

/// A percent-encoded character, once or more times over (`%3D`, `%253D`, ...): `pct("3D")`.
fn pct(hex: &str) -> String {
    format!("%(?:25)*{hex}")
}

struct Rule {
    re: Regex,
    replace: fn(&Captures) -> String,
}

fn rule(pattern: &str, replace: fn(&Captures) -> String) -> Rule {
    // The patterns are constants written below; a typo would fail every redaction unit test.
    #[allow(clippy::expect_used)]
    let re = Regex::new(pattern).expect("redaction pattern compiles");
    Rule { re, replace }
}

static RULES: LazyLock<Vec<Rule>> = LazyLock::new(|| {
    vec![
        // Any URL query string that carries a SAS signature: the whole query goes, because `se`,
        // `sp`, `skoid`, `sktid`... describe the grant and are nobody's business in a log.
        // Covers `*.blob.core.windows.net`, Azurite/simulator `127.0.0.1` URLs, and any host.
        rule(r#"(?i)\?[^\s"'<>\\]*\bsig=[^\s"'<>\\]*"#, |_| {
            format!("?{REDACTED}")
        }),
        // A SAS URL percent-encoded inside another URL's query or a form value
        // (`...%2Fblob.json%3Fsv%3D...%26sig%3D...`): its whole encoded query goes, up to the
        // outer query's next literal `&`.
        rule(
            &format!(
                r#"(?i)({q})(?:[^\s"'<>\\&#]*?{amp})?(?:s|{s})ig(?:=|{eq})[^\s"'<>\\&#]*"#,
                q = pct("3F"),
                amp = pct("26"),
                s = pct("73"),
                eq = pct("3D"),
            ),
            |c| format!("{}{REDACTED}", &c[1]),
        ),
        // A lone `sig=` outside a URL (connection strings, pasted fragments).
        rule(&format!(r"(?i)\b(sig=){VALUE}"), |c| {
            format!("{}{REDACTED}", &c[1])
        }),
        // A lone `sig` with the name or the `=` percent-encoded (`%73ig=`, `sig%3D`), also right
        // after an encoded `&` or `?`.
        rule(
            &format!(
                r"(?i)(^|[^A-Za-z0-9_%]|{amp}|{q})((?:s|{s})ig(?:=|{eq})){VALUE}",
                amp = pct("26"),
                q = pct("3F"),
                s = pct("73"),
                eq = pct("3D"),
            ),
            |c| format!("{}{}{REDACTED}", &c[1], &c[2]),
        ),
        // Service Bus / Event Hubs SAS tokens: `SharedAccessSignature sr=...&sig=...&se=...&skn=...`.
        rule(
            r#"(?i)\b(SharedAccessSignature[\s=]+)[^\s"'<>\\;,\[][^\s"'<>\\;,]*"#,
            |c| format!("{}{REDACTED}", &c[1]),
        ),
        // `Authorization: Bearer <token>` and any other `Bearer <token>`.
        rule(r"(?i)\b(bearer\s+)[A-Za-z0-9\-._~+/]+=*", |c| {
            format!("{}{REDACTED}", &c[1])
        }),
        // Any JWT (header and payload are base64url JSON, so both start with `eyJ`).
        rule(
            r"eyJ[A-Za-z0-9_-]*\.eyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*",
            |_| REDACTED.to_string(),
        ),
        // Storage and Service Bus connection-string keys.
        rule(
            &format!(r"(?i)\b(AccountKey|SharedAccessKey)={VALUE}"),
            |c| format!("{}={REDACTED}", &c[1]),
        ),
        // Storage Shared Key signatures: `Authorization: SharedKey account:signature` (and
        // `SharedKeyLite`); the account name stays.
        rule(
            &format!(r#"(?i)\b(SharedKey(?:Lite)?\s+[^\s:"'<>\\]+:){VALUE}"#),
            |c| format!("{}{REDACTED}", &c[1]),
        ),
        // Client secrets and passwords, by name: `client_secret` / `clientSecret` /
        // `client-secret`, `AZURE_CLIENT_SECRET` and any other `*_CLIENT_SECRET` or `*_PASSWORD`
        // variable, `password` / `Password` (connection strings) / `adminPassword` (ARM
        // templates) / `passwd`; as
        // `key=value` (form-encoded, log fields, environment), `key: value` and (escaped) JSON.
        rule(
            &format!(
                r#"(?i)\b([a-z0-9_-]*(?:client[_-]?secret|password|passwd)(?:\\?"|')?\s*[=:]\s*(?:\\?"|')?){VALUE}"#
            ),
            |c| format!("{}{REDACTED}", &c[1]),
        ),
    ]
});

/// Masks secrets in `s`: SAS signatures, plain or percent-encoded (and the whole query string of
/// any URL that carries one, also when that URL is itself encoded inside another), bearer
/// tokens, JWTs, `SharedAccessSignature ...` tokens, `AccountKey=` / `SharedAccessKey=`,
/// `SharedKey account:signature`, client secrets and passwords. Text without secrets comes back
/// borrowed. Idempotent: redacted text passes through unchanged.
pub fn redact(s: &str) -> Cow<'_, str> {
    let mut out = Cow::Borrowed(s);
    for rule in RULES.iter() {
        let replaced = rule.re.replace_all(&out, |c: &Captures| (rule.replace)(c));
        if let Cow::Owned(changed) = replaced {
            out = Cow::Owned(changed);
        }
    }
    out
}

/// [`redact`] for text that is already owned: what every boundary other than the log writer
/// (handler responses, dead letters, status messages) calls. No copy when nothing is secret.
pub fn redact_owned(s: String) -> String {
    let redacted = match redact(&s) {
        Cow::Owned(redacted) => Some(redacted),
        Cow::Borrowed(_) => None,
    };
    redacted.unwrap_or(s)
}

/// [`redact_owned`] applied to every string in a JSON value (object keys stay as they are), for
/// structured output that leaves the process, such as a handler's `ReturnValue`.
pub fn redact_json(value: &mut serde_json::Value) {
    use serde_json::Value;
    match value {
        Value::String(s) => *s = redact_owned(std::mem::take(s)),
        Value::Array(items) => items.iter_mut().for_each(redact_json),
        Value::Object(fields) => fields.values_mut().for_each(redact_json),
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
}

/// Wraps a `MakeWriter` so every formatted event is redacted before it is written.
///
/// The fmt layer asks for a fresh writer per event and writes the whole event into it; this
/// writer buffers it and redacts once on drop, so a secret split across several `write` calls
/// is still seen whole.
#[derive(Debug, Clone)]
pub struct RedactingMakeWriter<M> {
    inner: M,
}

impl<M> RedactingMakeWriter<M> {
    pub fn new(inner: M) -> Self {
        Self { inner }
    }
}

impl<'a, M> MakeWriter<'a> for RedactingMakeWriter<M>
where
    M: MakeWriter<'a>,
{
    type Writer = RedactingWriter<M::Writer>;

    fn make_writer(&'a self) -> Self::Writer {
        RedactingWriter {
            inner: self.inner.make_writer(),
            buf: Vec::new(),
        }
    }

    fn make_writer_for(&'a self, meta: &tracing::Metadata<'_>) -> Self::Writer {
        RedactingWriter {
            inner: self.inner.make_writer_for(meta),
            buf: Vec::new(),
        }
    }
}

pub struct RedactingWriter<W: Write> {
    inner: W,
    buf: Vec<u8>,
}

impl<W: Write> RedactingWriter<W> {
    /// Redacts and writes the complete lines buffered so far; keeps a trailing partial line,
    /// since a secret could continue in the next write.
    fn flush_complete_lines(&mut self) -> io::Result<()> {
        let Some(last_newline) = self.buf.iter().rposition(|b| *b == b'\n') else {
            return Ok(());
        };
        let rest = self.buf.split_off(last_newline + 1);
        let complete = std::mem::replace(&mut self.buf, rest);
        self.write_redacted(&complete)
    }

    fn write_redacted(&mut self, bytes: &[u8]) -> io::Result<()> {
        let text = String::from_utf8_lossy(bytes);
        self.inner.write_all(redact(&text).as_bytes())
    }
}

impl<W: Write> Write for RedactingWriter<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.flush_complete_lines()?;
        self.inner.flush()
    }
}

impl<W: Write> Drop for RedactingWriter<W> {
    fn drop(&mut self) {
        let pending = std::mem::take(&mut self.buf);
        if !pending.is_empty() {
            // Nowhere to report a failed log write; the fmt layer ignores these errors too.
            let _ = self.write_redacted(&pending);
        }
        let _ = self.inner.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_without_secrets_is_borrowed_and_unchanged() {
        let s = "protecting vm /subscriptions/0000/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/vm1 at https://kv.vault.azure.net/secrets/x?api-version=7.4";
        let out = redact(s);
        assert!(matches!(out, Cow::Borrowed(_)), "expected borrowed");
        assert_eq!(out, s);
    }

    #[test]
    fn blob_sas_url_loses_its_whole_query() {
        let s = "GET https://acct.blob.core.windows.net/state/vm.json?sv=2022-11-02&se=2030-01-01T00%3A00%3A00Z&sr=b&sp=rw&skoid=abc&sig=AbCd%2Bef%3D done";
        let out = redact(s);
        assert_eq!(
            out,
            "GET https://acct.blob.core.windows.net/state/vm.json?[REDACTED] done"
        );
    }

    #[test]
    fn loopback_sas_url_with_sig_first_is_redacted() {
        let out = redact("url=http://127.0.0.1:10000/devstoreaccount1/c/b?sig=s3cr3t&se=2030");
        assert_eq!(
            out,
            "url=http://127.0.0.1:10000/devstoreaccount1/c/b?[REDACTED]"
        );
    }

    #[test]
    fn url_query_without_sig_is_kept() {
        let s = "https://management.azure.com/subscriptions/x?api-version=2024-07-01&$top=5";
        assert_eq!(redact(s), s);
    }

    #[test]
    fn lone_sig_parameter_is_redacted() {
        assert_eq!(
            redact("BlobEndpoint=x;SharedAccessSignature=sv=2022&sig=abc123;x=y"),
            "BlobEndpoint=x;SharedAccessSignature=[REDACTED];x=y"
        );
        assert_eq!(
            redact("found sig=abc123 in input"),
            "found sig=[REDACTED] in input"
        );
    }

    #[test]
    fn bearer_tokens_are_redacted() {
        assert_eq!(
            redact("Authorization: Bearer abc.def-ghi_123=="),
            "Authorization: Bearer [REDACTED]"
        );
        assert_eq!(
            redact("authorization: bearer opaque"),
            "authorization: bearer [REDACTED]"
        );
    }

    #[test]
    fn jwts_are_redacted_anywhere() {
        let jwt = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl";
        let line = format!("token={jwt}, next");
        let out = redact(&line);
        assert_eq!(out, "token=[REDACTED], next");
    }

    #[test]
    fn service_bus_sas_token_is_redacted() {
        let out = redact(
            "Authorization: SharedAccessSignature sr=ns.servicebus.windows.net&sig=abc%3D&se=1&skn=send",
        );
        assert_eq!(out, "Authorization: SharedAccessSignature [REDACTED]");
    }

    #[test]
    fn connection_string_keys_are_redacted() {
        let out = redact(
            "DefaultEndpointsProtocol=https;AccountName=a;AccountKey=Zm9vYmFy+/==;EndpointSuffix=core.windows.net",
        );
        assert_eq!(
            out,
            "DefaultEndpointsProtocol=https;AccountName=a;AccountKey=[REDACTED];EndpointSuffix=core.windows.net"
        );
        let out = redact("Endpoint=sb://ns/;SharedAccessKeyName=send;SharedAccessKey=k3y=");
        assert_eq!(
            out,
            "Endpoint=sb://ns/;SharedAccessKeyName=send;SharedAccessKey=[REDACTED]"
        );
    }

    #[test]
    fn client_secret_forms_are_redacted() {
        assert_eq!(
            redact("grant_type=client_credentials&client_secret=p4ss&scope=x"),
            "grant_type=client_credentials&client_secret=[REDACTED]&scope=x"
        );
        assert_eq!(
            redact(r#"{"client_secret":"p4ss","a":1}"#),
            r#"{"client_secret":"[REDACTED]","a":1}"#
        );
        assert_eq!(
            redact(r#"{"message":"body {\"client_secret\":\"p4ss\"}"}"#),
            r#"{"message":"body {\"client_secret\":\"[REDACTED]\"}"}"#
        );
    }

    /// Each `(input, output)`: `input` redacts to `output` (equal to `input`: left alone).
    fn assert_redacts(cases: &[(&str, &str)]) {
        for (input, output) in cases {
            assert_eq!(redact(input), *output, "redacting {input}");
        }
    }

    #[test]
    fn percent_encoded_sig_is_redacted() {
        assert_redacts(&[
            (
                "pasted %73ig=AbC%2Bd%3D here",
                "pasted %73ig=[REDACTED] here",
            ),
            (
                "pasted sig%3DAbC%252Bd%253D here",
                "pasted sig%3D[REDACTED] here",
            ),
            ("x %73ig%3DAbC y", "x %73ig%3D[REDACTED] y"),
            ("sv%3D1%26sig%3DAbC", "sv%3D1%26sig%3D[REDACTED]"),
            // Not a parameter named `sig`.
            (
                "design%3Dflat config%3Dsigma",
                "design%3Dflat config%3Dsigma",
            ),
        ]);
    }

    #[test]
    fn sas_url_encoded_inside_another_url_loses_its_encoded_query() {
        let kept = "https://a.example/go?next=https%3A%2F%2Fb.example%2Fx%3Fpage%3D2%26q%3Dsigh";
        assert_redacts(&[
            (
                "open https://portal.example.com/go?next=https%3A%2F%2Fstg.blob.core.windows.net%2Fc%2Ft.json%3Fsv%3D2022-11-02%26se%3D2030%26sig%3DAbC%252Bd%253D&tab=1 now",
                "open https://portal.example.com/go?next=https%3A%2F%2Fstg.blob.core.windows.net%2Fc%2Ft.json%3F[REDACTED]&tab=1 now",
            ),
            // Encoded twice (a URL in a URL in a URL).
            ("u=x%253Fsv%253D1%2526sig%253DAbC", "u=x%253F[REDACTED]"),
            // An encoded query without a signature is kept.
            (kept, kept),
        ]);
    }

    #[test]
    fn client_secret_json_fields_are_redacted() {
        assert_redacts(&[
            (
                r#"{"clientId": "abc", "clientSecret": "p4ss~w0rd", "tenant": "t"}"#,
                r#"{"clientId": "abc", "clientSecret": "[REDACTED]", "tenant": "t"}"#,
            ),
            (
                r#"{"client_secret":"p4ss"}"#,
                r#"{"client_secret":"[REDACTED]"}"#,
            ),
        ]);
    }

    #[test]
    fn client_secret_key_value_forms_are_redacted() {
        assert_redacts(&[
            (
                "login clientSecret=p4ss tenant=t",
                "login clientSecret=[REDACTED] tenant=t",
            ),
            (
                "az login --service-principal client-secret: p4ss",
                "az login --service-principal client-secret: [REDACTED]",
            ),
        ]);
    }

    #[test]
    fn client_secret_environment_variables_are_redacted() {
        assert_redacts(&[
            (
                "env AZURE_CLIENT_ID=abc AZURE_CLIENT_SECRET=p4ss~w0rd AZURE_TENANT_ID=t",
                "env AZURE_CLIENT_ID=abc AZURE_CLIENT_SECRET=[REDACTED] AZURE_TENANT_ID=t",
            ),
            (
                "export ARM_CLIENT_SECRET='p4ss'",
                "export ARM_CLIENT_SECRET='[REDACTED]'",
            ),
        ]);
    }

    #[test]
    fn shared_key_authorization_is_redacted() {
        let prose = "SharedKey authorization is disabled on this account";
        assert_redacts(&[
            (
                "Authorization: SharedKey myaccount:ctzMq410TV3wS7upTBcunJTDLEJwMAZuFPfr0mrrA08=",
                "Authorization: SharedKey myaccount:[REDACTED]",
            ),
            (
                r#"{"Authorization":"SharedKeyLite acct:c2lnbmF0dXJl"}"#,
                r#"{"Authorization":"SharedKeyLite acct:[REDACTED]"}"#,
            ),
            (prose, prose),
        ]);
    }

    #[test]
    fn password_key_value_is_redacted() {
        // A template's parameter declaration is not a value.
        let declaration = r#""adminPassword": {"type": "securestring"}"#;
        assert_redacts(&[
            (
                "user=admin&password=hunter2&next=1",
                "user=admin&password=[REDACTED]&next=1",
            ),
            ("DB_PASSWORD=hunter2", "DB_PASSWORD=[REDACTED]"),
            (declaration, declaration),
        ]);
    }

    #[test]
    fn connection_string_password_is_redacted() {
        assert_redacts(&[
            (
                "Server=tcp:db.example.com;User ID=app;Password=hun;ter2x;Encrypt=True",
                "Server=tcp:db.example.com;User ID=app;Password=[REDACTED];ter2x;Encrypt=True",
            ),
            (
                "Host=h;Username=u;Password=hunter2",
                "Host=h;Username=u;Password=[REDACTED]",
            ),
        ]);
    }

    #[test]
    fn password_json_field_is_redacted() {
        assert_redacts(&[
            (
                r#"{"adminUsername": "azureuser", "password": "hunter2!"}"#,
                r#"{"adminUsername": "azureuser", "password": "[REDACTED]"}"#,
            ),
            (
                r#"{"message":"body {\"adminPassword\":\"x\",\"password\":\"hunter2\"}"}"#,
                r#"{"message":"body {\"adminPassword\":\"[REDACTED]\",\"password\":\"[REDACTED]\"}"}"#,
            ),
        ]);
    }

    #[test]
    fn redact_owned_keeps_clean_text_and_masks_secrets() {
        let clean = String::from("nothing to hide");
        let ptr = clean.as_ptr();
        let out = redact_owned(clean);
        assert_eq!(out, "nothing to hide");
        assert_eq!(out.as_ptr(), ptr, "clean text is not copied");
        assert_eq!(
            redact_owned("sig=abc".to_string()),
            format!("sig={REDACTED}")
        );
    }

    #[test]
    fn redact_json_masks_every_string() {
        let mut v = serde_json::json!({
            "failures": [{"vmId": "vm-1", "error": "GET https://a.blob.core.windows.net/c/b?sv=1&sig=abc failed"}],
            "ok": true
        });
        redact_json(&mut v);
        assert_eq!(
            v,
            serde_json::json!({
                "failures": [{"vmId": "vm-1", "error": "GET https://a.blob.core.windows.net/c/b?[REDACTED] failed"}],
                    "ok": true
            })
        );
    }

    #[test]
    fn redaction_is_idempotent() {
        for s in [
            "https://a.blob.core.windows.net/c/b?sv=1&sig=x",
            "x sig=abc;y",
            "Bearer abc",
            "AccountKey=abc;",
            "client_secret=abc&",
            "SharedAccessSignature sr=a&sig=b",
            "x %73ig=abc y",
            "x sig%3Dabc y",
            "go?next=https%3A%2F%2Fa%2Fb%3Fsv%3D1%26sig%3Dabc&tab=1",
            r#"{"clientSecret": "abc"}"#,
            "clientSecret=abc",
            "AZURE_CLIENT_SECRET=abc",
            "Authorization: SharedKey acct:abc=",
            "password=abc&x",
            "Server=s;Password=abc;",
            r#"{"password": "abc"}"#,
        ] {
            let once = redact(s).into_owned();
            assert_ne!(once, s, "{s} must be redacted");
            assert_eq!(redact(&once), once, "second pass changed {once}");
        }
    }

    #[test]
    fn writer_redacts_a_secret_split_across_writes() {
        let mut sink = Vec::new();
        {
            let mut w = RedactingWriter {
                inner: &mut sink,
                buf: Vec::new(),
            };
            w.write_all(b"Authorization: Bea").expect("write");
            w.write_all(b"rer s3cr3t-token\n").expect("write");
        }
        let out = String::from_utf8(sink).expect("utf8");
        assert_eq!(out, "Authorization: Bearer [REDACTED]\n");
    }
}
