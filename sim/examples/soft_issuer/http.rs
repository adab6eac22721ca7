//! The smallest HTTP/1.1 endpoint that plays the merchant for `sim pay --send`: it takes
//! `POST` with `{"payer_packet": "<base64>"}`, hands the packet to a handler (the soft issuer)
//! and replies `{"payer_answer": "<base64>" | null, "response_code": ".."}` (docs/SIM.md).
//! One request per connection, sizes bounded. TEST ONLY: the real merchant server is `merchant/`.
#![allow(dead_code)]

use std::io::{Read, Write};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::Deserialize;

/// Largest request head.
const HEAD_BYTES_MAX: usize = 8 * 1024;
/// Largest request body.
const BODY_BYTES_MAX: usize = 8 * 1024;

#[derive(Deserialize)]
struct PayRequest {
    payer_packet: String,
}

/// What the handler decided: an answer, or a response code without one.
pub enum Reply {
    /// The issuer authenticated the packet and answered.
    Answer { response_code: String, answer: Vec<u8> },
    /// The issuer could not authenticate the packet.
    NoAnswer { response_code: String },
    /// The issuer's answer, relayed for a payment the merchant reversed (a merchant server
    /// says `"status": "reversed"`; the soft issuer only plays it for tests).
    Reversed { response_code: String, answer: Vec<u8> },
}

fn respond(stream: &mut impl Write, status: &str, content_type: &str, body: &str) -> std::io::Result<()> {
    write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    stream.flush()
}

fn problem(stream: &mut impl Write, status: &str, detail: &str) -> std::io::Result<()> {
    let body = serde_json::json!({ "title": status, "detail": detail }).to_string();
    respond(stream, status, "application/problem+json", &body)
}

/// Reads one request from `stream`, calls `handler` with the packet bytes, writes the reply.
pub fn serve_one(stream: &mut (impl Read + Write), handler: impl FnOnce(&[u8]) -> Reply) -> std::io::Result<()> {
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 1024];
    let head_end = loop {
        if let Some(position) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            break position + 4;
        }
        if buffer.len() > HEAD_BYTES_MAX {
            return problem(stream, "431 Request Header Fields Too Large", "request head too large");
        }
        let read = stream.read(&mut chunk)?;
        if read == 0 {
            return Ok(());
        }
        buffer.extend_from_slice(&chunk[..read]);
    };
    let head = String::from_utf8_lossy(&buffer[..head_end]).into_owned();
    if !head.starts_with("POST ") {
        return problem(stream, "405 Method Not Allowed", "POST a payer packet");
    }
    let length = head
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("content-length").then(|| value.trim().parse::<usize>().ok())?
        })
        .unwrap_or(0);
    if length > BODY_BYTES_MAX {
        return problem(stream, "413 Content Too Large", "body too large");
    }
    while buffer.len() < head_end + length {
        let read = stream.read(&mut chunk)?;
        if read == 0 {
            return Ok(());
        }
        buffer.extend_from_slice(&chunk[..read]);
    }
    let body = &buffer[head_end..head_end + length];
    let Ok(request) = serde_json::from_slice::<PayRequest>(body) else {
        return problem(stream, "400 Bad Request", "expected {\"payer_packet\": \"<base64>\"}");
    };
    let Ok(packet) = BASE64.decode(request.payer_packet.trim()) else {
        return problem(stream, "400 Bad Request", "payer_packet is not base64");
    };
    let body = match handler(&packet) {
        Reply::Answer { response_code, answer } => {
            serde_json::json!({ "payer_answer": BASE64.encode(answer), "response_code": response_code })
        }
        Reply::NoAnswer { response_code } => {
            serde_json::json!({ "payer_answer": null, "response_code": response_code })
        }
        Reply::Reversed { response_code, answer } => serde_json::json!({
            "payer_answer": BASE64.encode(answer), "response_code": response_code, "status": "reversed"
        }),
    };
    respond(stream, "200 OK", "application/json", &body.to_string())
}
