//! `--send`: hands the payer packet to the merchant's server and brings back the issuer's
//! answer, if there is one.
//!
//! Contract (docs/SIM.md): `POST <url>` with `Content-Type: application/json` and body
//! `{"payer_packet": "<base64 of the 113 bytes>"}`. The merchant answers HTTP 200 with
//! `{"payer_answer": "<base64 of the 79 bytes>" | null, "response_code": "00", ...}`; a
//! `"status": "reversed"` says the merchant reversed the payment (the answer is still read, so
//! the SIM's keys move on); other fields are ignored. Any other status is a failure (an RFC 7807 `detail` or `title` is shown).
//! HTTPS trusts only the CA file configured as `merchant_ca_file`; the TLS provider is
//! aws-lc-rs, set explicitly on the client.

use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use mps_protocol::wire::ANSWER_LEN;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use serde::Deserialize;

use crate::config::Config;
use crate::error::CliError;

/// What the merchant's server said.
#[derive(Debug)]
pub struct MerchantReply {
    /// The issuer's answer for the SIM, when the issuer authenticated the packet.
    pub payer_answer: Option<Vec<u8>>,
    /// The ISO 8583 response code the merchant relays, if any.
    pub response_code: Option<String>,
    /// The merchant's status of the order, if it says (`reversed`: the bank's answer was
    /// undone by a reversal, DESIGN.md section 6.1).
    pub order_status: Option<String>,
}

#[derive(Deserialize)]
struct ReplyBody {
    payer_answer: Option<String>,
    response_code: Option<String>,
    status: Option<String>,
}

#[derive(Deserialize)]
struct Problem {
    title: Option<String>,
    detail: Option<String>,
}

fn tls_config(config: &Config) -> Result<rustls::ClientConfig, CliError> {
    let mut roots = rustls::RootCertStore::empty();
    if let Some(path) = &config.merchant_ca_file {
        let certificates = CertificateDer::pem_file_iter(path)
            .map_err(|e| CliError::config(format!("merchant_ca_file {}: {e}", path.display())))?;
        for certificate in certificates {
            let certificate =
                certificate.map_err(|e| CliError::config(format!("merchant_ca_file {}: {e}", path.display())))?;
            roots
                .add(certificate)
                .map_err(|e| CliError::config(format!("merchant_ca_file {}: {e}", path.display())))?;
        }
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| CliError::config(format!("TLS setup: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// Checks, before anything is built, that a packet can be sent to `url`: the scheme, and for
/// https a readable CA file.
pub fn check_destination(url: &str, config: &Config) -> Result<(), CliError> {
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return Err(CliError::input(format!("--send: {url:?} must start with http:// or https://")));
    }
    if url.starts_with("https://") && config.merchant_ca_file.is_none() {
        return Err(CliError::config(
            "an https:// merchant URL needs merchant_ca_file (MPS_SIM__MERCHANT_CA_FILE): the CA that signs the merchant's certificate".into(),
        ));
    }
    tls_config(config).map(drop)
}

/// Posts the packet and returns the merchant's reply.
pub fn send_packet(url: &str, packet: &[u8], config: &Config) -> Result<MerchantReply, CliError> {
    check_destination(url, config)?;
    let client = reqwest::Client::builder()
        .use_preconfigured_tls(tls_config(config)?)
        .timeout(config.send_timeout)
        .connect_timeout(config.send_timeout)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| CliError::Send(format!("cannot build the HTTP client: {e}")))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::Send(format!("cannot start the I/O runtime: {e}")))?;
    let body = serde_json::json!({ "payer_packet": BASE64.encode(packet) });
    let (status, bytes) = runtime.block_on(async {
        let mut response = client
            .post(url)
            .json(&body)
            .send()
            .await
            .map_err(|e| CliError::Send(format!("{url}: {}", describe(&e))))?;
        let status = response.status();
        let mut bytes = Vec::new();
        while let Some(chunk) =
            response.chunk().await.map_err(|e| CliError::Send(format!("{url}: {}", describe(&e))))?
        {
            if (bytes.len() + chunk.len()) as u64 > config.response_bytes_max {
                return Err(CliError::Send(format!("the reply is larger than {} bytes", config.response_bytes_max)));
            }
            bytes.extend_from_slice(&chunk);
        }
        Ok((status, bytes))
    })?;
    if !status.is_success() {
        let reason = serde_json::from_slice::<Problem>(&bytes)
            .ok()
            .and_then(|p| p.detail.or(p.title))
            .unwrap_or_else(|| String::from_utf8_lossy(&bytes).chars().take(200).collect());
        return Err(CliError::Send(format!("the merchant answered HTTP {status}: {reason}")));
    }
    let reply: ReplyBody = serde_json::from_slice(&bytes)
        .map_err(|e| CliError::Send(format!("the merchant's reply is not the expected JSON: {e}")))?;
    let payer_answer = match reply.payer_answer {
        None => None,
        Some(text) => {
            let answer = BASE64
                .decode(text.trim())
                .map_err(|_| CliError::Send("the merchant's payer_answer is not base64".into()))?;
            if answer.len() != ANSWER_LEN {
                return Err(CliError::Send(format!(
                    "the merchant's payer_answer has {} bytes, an answer has {ANSWER_LEN}",
                    answer.len()
                )));
            }
            Some(answer)
        }
    };
    Ok(MerchantReply { payer_answer, response_code: reply.response_code, order_status: reply.status })
}

/// The error and its causes on one line (reqwest hides the useful part in the source chain).
fn describe(error: &reqwest::Error) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
