//! Stand-in for the merchant server and the payment gateway in the demo (both come with their
//! own issue): takes the SIM's packet, builds the merchant request, signs it with the merchant's
//! key (detached JWS with its x5c chain), posts it to the authorization server over mutual TLS
//! with the gateway's client certificate, checks the bank's signature on the answer against the
//! scheme CA, prints the answer and writes the SIM's part to a file.
#![allow(missing_docs)]

use std::path::PathBuf;
use std::process::ExitCode;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use clap::Parser;
use mps_pki::{Role, SoftwareSigner, TrustStore};

/// Signs a payment request as the merchant and posts it as the gateway.
#[derive(Debug, Parser)]
struct Args {
    /// Base URL of the authorization server.
    #[arg(long)]
    url: String,
    /// File with the SIM's packet (113 raw bytes, or base64).
    #[arg(long)]
    packet: PathBuf,
    /// Merchant id (must match the merchant certificate).
    #[arg(long)]
    merchant_id: String,
    /// Order number (must match the packet).
    #[arg(long)]
    order: String,
    /// Amount in minor units (must match the packet).
    #[arg(long)]
    amount: u64,
    /// ISO 4217 numeric currency.
    #[arg(long, default_value_t = 978)]
    currency: u16,
    /// The merchant's acquirer.
    #[arg(long, default_value = "500001")]
    acquirer_iin: String,
    /// The merchant's account at its acquirer.
    #[arg(long, default_value = "DE89370400440532013000")]
    merchant_account: String,
    /// Merchant certificate chain and key (PEM).
    #[arg(long)]
    merchant_cert: PathBuf,
    #[arg(long)]
    merchant_key: PathBuf,
    /// Gateway client certificate chain and key (PEM).
    #[arg(long)]
    gateway_cert: PathBuf,
    #[arg(long)]
    gateway_key: PathBuf,
    /// Scheme root CA and CRLs (PEM).
    #[arg(long)]
    ca: PathBuf,
    #[arg(long)]
    crls: PathBuf,
    /// Where to write the SIM's answer (base64).
    #[arg(long)]
    answer_out: PathBuf,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    match run(Args::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<(), String> {
    let raw = std::fs::read(&args.packet).map_err(|e| format!("{}: {e}", args.packet.display()))?;
    // `sim pay --out` writes the 113 raw bytes; a text file holds base64.
    let packet = if raw.len() == mps_protocol::wire::PACKET_LEN {
        raw
    } else {
        let text = String::from_utf8(raw).map_err(|_| "packet file is neither 113 raw bytes nor base64".to_owned())?;
        BASE64.decode(text.trim()).map_err(|e| format!("packet is not base64: {e}"))?
    };
    let merchant_chain = mps_pki::pem::load_certificates(&args.merchant_cert).map_err(|e| e.to_string())?;
    let signer = SoftwareSigner::from_pkcs8_pem_file(&args.merchant_key).map_err(|e| e.to_string())?;
    let now =
        time::OffsetDateTime::now_utc().format(&time::format_description::well_known::Rfc3339).unwrap_or_default();
    let body = serde_json::to_vec(&serde_json::json!({
        "payer_packet": BASE64.encode(&packet),
        "merchant_id": args.merchant_id,
        "order_no": args.order,
        "amount": args.amount,
        "currency": args.currency,
        "acquirer_iin": args.acquirer_iin,
        "merchant_account": args.merchant_account,
        "merchant_time": now,
    }))
    .map_err(|e| e.to_string())?;
    let jws = mps_pki::jws::sign_detached(&body, &merchant_chain, &signer).map_err(|e| e.to_string())?;

    let trust = TrustStore::from_pem_files(&[&args.ca], &[&args.crls]).map_err(|e| e.to_string())?;
    let verifier = mps_pki::tls::server_cert_verifier(&trust, Role::AuthzServer).map_err(|e| e.to_string())?;
    let tls = mps_pki::tls::client_config(verifier, Some((&args.gateway_cert, &args.gateway_key)))
        .map_err(|e| e.to_string())?;
    let client = reqwest::Client::builder().use_preconfigured_tls(tls).build().map_err(|e| e.to_string())?;
    let response = client
        .post(format!("{}/v1/authorizations", args.url))
        .header("content-type", "application/json")
        .header("x-jws-signature", jws)
        .body(body)
        .send()
        .await
        .map_err(|e| format!("post to the authorization server: {e}"))?;
    let status = response.status();
    let signature = response.headers().get("x-jws-signature").and_then(|v| v.to_str().ok()).map(str::to_owned);
    let answer = response.bytes().await.map_err(|e| e.to_string())?;
    let json: serde_json::Value = serde_json::from_slice(&answer).map_err(|e| format!("answer is not JSON: {e}"))?;
    println!("HTTP {status}");
    println!("{}", serde_json::to_string_pretty(&json).unwrap_or_default());
    if !status.is_success() {
        return Err(format!("the authorization server refused the request ({status})"));
    }
    let signature = signature.ok_or("the answer carries no x-jws-signature")?;
    let identity = mps_pki::jws::verify_detached(
        &signature,
        &answer,
        &trust,
        Role::BankSigning,
        rustls_pki_types::UnixTime::now(),
    )
    .map_err(|e| format!("the bank's signature does not verify: {e}"))?;
    let issuer = identity.bank_iin.map(|iin| iin.to_string()).unwrap_or_default();
    println!("bank signature verified: issuer {issuer} ({})", identity.subject);
    match json["payer_answer"].as_str() {
        Some(payer_answer) => {
            std::fs::write(&args.answer_out, payer_answer).map_err(|e| e.to_string())?;
            println!("answer for the SIM written to {}", args.answer_out.display());
        }
        None => println!("no answer for the SIM (the packet could not be authenticated)"),
    }
    Ok(())
}
