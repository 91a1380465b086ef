//! The client-certificate credential from a Secrets Manager secret, through
//! `azure_identity::ClientAssertionCredential`, against a wiremock Entra token endpoint: the token
//! request has Entra's wire format (form fields of the jwt-bearer client assertion), and the
//! assertion verifies with the certificate's public key and carries the documented claims
//! (Microsoft identity platform, "Certificate credentials").

use ade_backup_lambda::cert_assertion::ASSERTION_LIFETIME_SECS;
use ade_backup_lambda::secrets::EntraSecret;
use async_trait::async_trait;
use azure_core::http::{
    new_http_client, AsyncRawResponse, ClientOptions, HttpClient, Request, Transport, Url,
};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::Arc;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const PEM: &str = include_str!("fixtures/entra-cert.pem");
const TENANT: &str = "5b6f0c7e-3d1a-4c2b-9e8f-0a1b2c3d4e5f";
const CLIENT: &str = "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d";
/// The authority host the credential believes it talks to (`azure_identity` requires https);
/// [`ToWiremock`] sends its requests to the local server instead.
const AUTHORITY: &str = "https://login.entra.test";
const ARM_SCOPE: &str = "https://management.azure.com/.default";

/// An HTTP client that sends every request to the wiremock server, keeping path and query.
#[derive(Debug)]
struct ToWiremock {
    server: Url,
    inner: Arc<dyn HttpClient>,
}

#[async_trait]
impl HttpClient for ToWiremock {
    async fn execute_request(&self, request: &Request) -> azure_core::Result<AsyncRawResponse> {
        let mut local = request.clone();
        let mut url = self.server.join(request.url().path())?;
        url.set_query(request.url().query());
        *local.url_mut() = url;
        self.inner.execute_request(&local).await
    }
}

fn b64_json(part: &str) -> Value {
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).expect("base64url")).expect("json")
}

/// Checks the assertion's signature with the certificate's public key; `Err` if it does not
/// verify.
fn verify(jwt: &str, cert: &CertificateDer<'_>) -> Result<(), webpki::Error> {
    let (signing_input, signature) = jwt.rsplit_once('.').expect("three parts");
    let signature = URL_SAFE_NO_PAD
        .decode(signature)
        .expect("base64url signature");
    webpki::EndEntityCert::try_from(cert)
        .expect("certificate")
        .verify_signature(
            webpki::aws_lc_rs::RSA_PKCS1_2048_8192_SHA256,
            signing_input.as_bytes(),
            &signature,
        )
}

#[tokio::test]
async fn the_certificate_credential_signs_an_assertion_entra_accepts() {
    let server = MockServer::start().await;
    let token_path = format!("/{TENANT}/oauth2/v2.0/token");
    Mock::given(method("POST"))
        .and(path(token_path.as_str()))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "token_type": "Bearer", "expires_in": 3599, "ext_expires_in": 3599,
            "access_token": "arm-token-from-entra"
        })))
        .expect(1)
        .mount(&server)
        .await;

    let secret = json!({"tenantId": TENANT, "clientId": CLIENT, "clientCertificate": PEM});
    let secret = EntraSecret::parse("arn:aws:secretsmanager:x", &secret.to_string()).expect("ok");
    let transport = ToWiremock {
        server: Url::parse(&server.uri()).expect("uri"),
        inner: new_http_client(None),
    };
    let options = ClientOptions {
        transport: Some(Transport::new(Arc::new(transport))),
        ..Default::default()
    };
    let identity = secret.credential(AUTHORITY, options).expect("credential");
    let credential = identity.azure.expect("an azure_core credential");
    let before = chrono::Utc::now().timestamp();
    let token = credential
        .get_token(&[ARM_SCOPE], None)
        .await
        .expect("a token");
    assert_eq!(token.token.secret(), "arm-token-from-entra");

    // The token request: a form with the jwt-bearer client assertion.
    let requests = server.received_requests().await.expect("recorded");
    assert_eq!(requests.len(), 1);
    let content_type = requests[0]
        .headers
        .get("content-type")
        .and_then(|v| v.to_str().ok());
    assert_eq!(content_type, Some("application/x-www-form-urlencoded"));
    let form: HashMap<String, String> = url::form_urlencoded::parse(&requests[0].body)
        .into_owned()
        .collect();
    assert_eq!(form["grant_type"], "client_credentials");
    assert_eq!(form["client_id"], CLIENT);
    assert_eq!(form["scope"], ARM_SCOPE);
    assert_eq!(
        form["client_assertion_type"],
        "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
    );
    assert!(!form.contains_key("client_secret"));

    // The assertion: signed by the certificate's key, with the documented header and claims.
    let jwt = &form["client_assertion"];
    let cert = CertificateDer::from_pem_slice(PEM.as_bytes()).expect("certificate");
    verify(jwt, &cert).expect("the signature verifies with the certificate's public key");
    let parts: Vec<&str> = jwt.split('.').collect();
    assert_eq!(parts.len(), 3);
    let header = b64_json(parts[0]);
    assert_eq!(header["alg"], "RS256");
    assert_eq!(header["typ"], "JWT");
    assert_eq!(
        header["x5t#S256"],
        URL_SAFE_NO_PAD.encode(Sha256::digest(cert.as_ref()))
    );
    let claims = b64_json(parts[1]);
    assert_eq!(claims["aud"], format!("{AUTHORITY}{token_path}"));
    assert_eq!(claims["iss"], CLIENT);
    assert_eq!(claims["sub"], CLIENT);
    let jti = claims["jti"].as_str().expect("jti");
    assert!(uuid::Uuid::parse_str(jti).is_ok(), "{jti}");
    let (nbf, exp) = (
        claims["nbf"].as_i64().expect("nbf"),
        claims["exp"].as_i64().expect("exp"),
    );
    let after = chrono::Utc::now().timestamp();
    assert!(
        before <= nbf && nbf <= after,
        "nbf {nbf} in [{before}, {after}]"
    );
    assert_eq!(exp - nbf, ASSERTION_LIFETIME_SECS);

    // The check can fail: another message or a changed signature does not verify.
    let forged = format!("{}.{}.{}", parts[0], parts[0], parts[2]);
    assert!(
        verify(&forged, &cert).is_err(),
        "a forged assertion verifies"
    );
}
