//! The Entra client-certificate credential without OpenSSL: a signed client assertion (Microsoft
//! identity platform, "Certificate credentials": <https://learn.microsoft.com/entra/identity-platform/certificate-credentials>)
//! built here and handed to `azure_identity::ClientAssertionCredential`, which makes the token
//! request (`client_assertion_type=urn:ietf:params:oauth:client-assertion-type:jwt-bearer`).
//! `azure_identity`'s own `ClientCertificateCredential` needs its `client_certificate` feature,
//! which links OpenSSL; the RSA signature here is aws-lc-rs's, the crypto library the AWS SDK's
//! rustls already links into the binary.
//!
//! The assertion is a JWT: header `{"alg":"RS256","typ":"JWT","x5t#S256":…}` (base64url SHA-256
//! of the certificate's DER), claims `aud` = the token endpoint, `iss` = `sub` = the client id, a
//! fresh `jti`, `iat` = `nbf` = now, `exp` = now + 10 minutes.
//!
//! [`CertificateKey::from_pem`] reads one PEM text holding the certificate (the first
//! `CERTIFICATE` block; a chain may follow) and its unencrypted RSA key (`PRIVATE KEY` or
//! `RSA PRIVATE KEY`), and checks that the key is the certificate's. Key material is never
//! formatted: `Debug` shows the thumbprint only, and errors say which rule failed, never the text.

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{RsaKeyPair, RSA_PKCS1_SHA256};
use azure_core::http::ClientMethodOptions;
use azure_identity::ClientAssertion;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};
use std::sync::Arc;

/// How long an assertion is valid (Entra accepts it only inside `nbf`..`exp`).
pub const ASSERTION_LIFETIME_SECS: i64 = 600;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CertificateError {
    #[error("has no PEM CERTIFICATE block")]
    NoCertificate,
    #[error("is not valid PEM (a block's base64 or its BEGIN/END lines are malformed)")]
    MalformedPem,
    #[error("its CERTIFICATE block is not a valid X.509 certificate")]
    BadCertificate,
    #[error("has no unencrypted PEM PRIVATE KEY or RSA PRIVATE KEY block (encrypted keys are not supported)")]
    NoKey,
    #[error("its private key is not a valid RSA key of 2048 bits or more")]
    BadKey,
    #[error("its private key does not belong to its certificate")]
    KeyMismatch,
    #[error("could not sign the client assertion")]
    Signing,
}

/// The certificate's thumbprint and private key, checked to belong together.
#[derive(Clone)]
pub struct CertificateKey {
    thumbprint_s256: String,
    key: Arc<RsaKeyPair>,
}

impl std::fmt::Debug for CertificateKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertificateKey")
            .field("x5t#S256", &self.thumbprint_s256)
            .field("key", &"<redacted>")
            .finish()
    }
}

fn rsa_key(key: &PrivateKeyDer<'_>) -> Result<RsaKeyPair, CertificateError> {
    match key {
        PrivateKeyDer::Pkcs8(der) => RsaKeyPair::from_pkcs8(der.secret_pkcs8_der()),
        PrivateKeyDer::Pkcs1(der) => RsaKeyPair::from_der(der.secret_pkcs1_der()),
        _ => return Err(CertificateError::BadKey),
    }
    .map_err(|_| CertificateError::BadKey)
}

fn sign(key: &RsaKeyPair, message: &[u8]) -> Result<Vec<u8>, CertificateError> {
    let mut signature = vec![0; key.public_modulus_len()];
    key.sign(
        &RSA_PKCS1_SHA256,
        &SystemRandom::new(),
        message,
        &mut signature,
    )
    .map_err(|_| CertificateError::Signing)?;
    Ok(signature)
}

impl CertificateKey {
    /// Parses and checks the PEM text (see the module docs).
    pub fn from_pem(pem: &str) -> Result<Self, CertificateError> {
        let cert = match CertificateDer::pem_slice_iter(pem.as_bytes()).next() {
            None => return Err(CertificateError::NoCertificate),
            Some(Err(_)) => return Err(CertificateError::MalformedPem),
            Some(Ok(cert)) => cert,
        };
        let parsed =
            webpki::EndEntityCert::try_from(&cert).map_err(|_| CertificateError::BadCertificate)?;
        let key_der = PrivateKeyDer::from_pem_slice(pem.as_bytes()).map_err(|e| match e {
            rustls_pki_types::pem::Error::NoItemsFound => CertificateError::NoKey,
            _ => CertificateError::MalformedPem,
        })?;
        let key = rsa_key(&key_der)?;
        if key.public_modulus_len() < 256 {
            return Err(CertificateError::BadKey);
        }
        // The key is the certificate's if the certificate's public key verifies its signature.
        let probe = b"ade-backup certificate/key pairing check";
        parsed
            .verify_signature(
                webpki::aws_lc_rs::RSA_PKCS1_2048_8192_SHA256,
                probe,
                &sign(&key, probe)?,
            )
            .map_err(|_| CertificateError::KeyMismatch)?;
        Ok(Self {
            thumbprint_s256: URL_SAFE_NO_PAD.encode(Sha256::digest(cert.as_ref())),
            key: Arc::new(key),
        })
    }

    /// The `x5t#S256` header value.
    pub fn thumbprint_s256(&self) -> &str {
        &self.thumbprint_s256
    }

    /// A signed assertion for `client_id` at `token_endpoint`, valid from `now` (Unix seconds).
    pub fn assertion(
        &self,
        client_id: &str,
        token_endpoint: &str,
        now: i64,
    ) -> Result<String, CertificateError> {
        let header = serde_json::json!({
            "alg": "RS256",
            "typ": "JWT",
            "x5t#S256": self.thumbprint_s256,
        });
        let claims = serde_json::json!({
            "aud": token_endpoint,
            "iss": client_id,
            "sub": client_id,
            "jti": uuid::Uuid::new_v4().to_string(),
            "iat": now,
            "nbf": now,
            "exp": now + ASSERTION_LIFETIME_SECS,
        });
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let signature = sign(&self.key, signing_input.as_bytes())?;
        Ok(format!(
            "{signing_input}.{}",
            URL_SAFE_NO_PAD.encode(signature)
        ))
    }
}

/// The [`ClientAssertion`] `ClientAssertionCredential` asks for on each token request (it caches
/// the tokens, so an assertion is signed about once an hour).
#[derive(Debug, Clone)]
pub struct CertificateAssertion {
    pub key: CertificateKey,
    pub client_id: String,
    /// `{authority host}/{tenant}/oauth2/v2.0/token`, the `aud` claim.
    pub token_endpoint: String,
}

#[async_trait::async_trait]
impl ClientAssertion for CertificateAssertion {
    async fn secret(&self, _: Option<ClientMethodOptions<'_>>) -> azure_core::Result<String> {
        self.key
            .assertion(
                &self.client_id,
                &self.token_endpoint,
                chrono::Utc::now().timestamp(),
            )
            .map_err(|e| azure_core::Error::new(azure_core::error::ErrorKind::Credential, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PEM: &str = include_str!("../tests/fixtures/entra-cert.pem");
    const OTHER_KEY: &str = include_str!("../tests/fixtures/other-key.pem");

    fn part(jwt: &str, i: usize) -> serde_json::Value {
        let text = jwt.split('.').nth(i).expect("part");
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(text).expect("base64url")).expect("json")
    }

    #[test]
    fn the_assertion_has_the_documented_shape() {
        let key = CertificateKey::from_pem(PEM).expect("valid pair");
        assert!(!format!("{key:?}").contains("PRIVATE"));
        let jwt = key
            .assertion("app", "https://login.example/t/oauth2/v2.0/token", 1000)
            .expect("signed");
        assert_eq!(jwt.split('.').count(), 3);
        let header = part(&jwt, 0);
        assert_eq!(header["alg"], "RS256");
        assert_eq!(header["x5t#S256"], key.thumbprint_s256());
        let claims = part(&jwt, 1);
        assert_eq!(claims["aud"], "https://login.example/t/oauth2/v2.0/token");
        assert_eq!(
            (claims["iss"].as_str(), claims["sub"].as_str()),
            (Some("app"), Some("app"))
        );
        assert_eq!(
            (claims["nbf"].as_i64(), claims["exp"].as_i64()),
            (Some(1000), Some(1600))
        );
        let again = key.assertion("app", "x", 1000).expect("signed");
        assert_ne!(
            part(&again, 1)["jti"],
            claims["jti"],
            "a fresh jti each time"
        );
    }

    #[test]
    fn each_defect_is_named_without_the_text() {
        let cert_only: String = PEM
            .split_inclusive('\n')
            .take_while(|l| !l.contains("PRIVATE KEY"))
            .collect();
        let key_only = PEM.replace(&cert_only, "");
        let mismatched = format!("{cert_only}{OTHER_KEY}");
        let garbled = PEM.replacen("MII", "MIX", 1);
        for (pem, want) in [
            ("", CertificateError::NoCertificate),
            (key_only.as_str(), CertificateError::NoCertificate),
            (cert_only.as_str(), CertificateError::NoKey),
            (mismatched.as_str(), CertificateError::KeyMismatch),
            (garbled.as_str(), CertificateError::BadCertificate),
        ] {
            let got = CertificateKey::from_pem(pem).expect_err("defect");
            assert_eq!(got, want);
            assert!(!got.to_string().contains("MII"), "{got}");
        }
    }
}
