//! The `sim` binary driven as a payer would: personalise from a record made by the soft issuer
//! (`examples/soft_issuer`), add an account and merchants, pay, open the answer, pay again with
//! the next keys; pending payments, resend, `--send` over HTTP and HTTPS on loopback, prompts;
//! and every bad input refused with a clear message, leaving the profile file byte-identical.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

#[path = "../examples/soft_issuer/http.rs"]
mod http;
#[path = "../examples/soft_issuer/issuer.rs"]
mod issuer;

use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use mps_protocol::{Account, Currency, Iin, Password, PayerPacket, SimId};

use issuer::IssuerState;

const IIN: &str = "400012";
const SIM_ID: &str = "8949012345678901234";
const ACCOUNT: &str = "4000120000001234";
const PASSWORD: &str = "2468ab";
const CERT_PEM: &str = "-----BEGIN CERTIFICATE-----\nMA==\n-----END CERTIFICATE-----\n";

/// A temp directory with a soft issuer, its record and transport key, and a profile path.
struct Demo {
    dir: tempfile::TempDir,
    issuer: Arc<Mutex<IssuerState>>,
    transport_key_hex: String,
}

/// What a `sim` run gave back.
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn from(output: Output) -> Self {
        Self {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8(output.stdout).unwrap(),
            stderr: String::from_utf8(output.stderr).unwrap(),
        }
    }

    fn ok(self) -> Self {
        assert_eq!(self.code, 0, "sim failed:\nstdout: {}\nstderr: {}", self.stdout, self.stderr);
        self
    }
}

impl Demo {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut rng = rand::rngs::OsRng;
        let mut state = IssuerState::new(&mut rng);
        let (record, key) = state
            .enroll(
                Iin::new(IIN).unwrap(),
                &SimId::new(SIM_ID).unwrap(),
                &Account::new(ACCOUNT).unwrap(),
                &Password::new(PASSWORD).unwrap(),
                100_000,
                Currency::EUR,
                CERT_PEM,
                &mut rng,
            )
            .unwrap();
        std::fs::write(dir.path().join("record.json"), record.to_json()).unwrap();
        let transport_key_hex = hex::encode(key.expose());
        std::fs::write(dir.path().join("transport.key"), format!("{transport_key_hex}\n")).unwrap();
        Self { dir, issuer: Arc::new(Mutex::new(state)), transport_key_hex }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn profile(&self) -> PathBuf {
        self.path("profile.json")
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_sim"));
        command
            .args(args)
            .current_dir(self.dir.path())
            .env_clear()
            .env("MPS_SIM_PROFILE", self.profile())
            .stdin(Stdio::null());
        command
    }

    fn sim(&self, args: &[&str]) -> Run {
        Run::from(self.command(args).output().unwrap())
    }

    fn sim_env(&self, args: &[&str], env: &[(&str, &str)]) -> Run {
        let mut command = self.command(args);
        command.envs(env.iter().copied());
        Run::from(command.output().unwrap())
    }

    fn sim_stdin(&self, args: &[&str], env: &[(&str, &str)], stdin: &str) -> Run {
        let mut command = self.command(args);
        command.envs(env.iter().copied()).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = command.spawn().unwrap();
        child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
        Run::from(child.wait_with_output().unwrap())
    }

    /// Personalised, with the account and two merchants registered.
    fn ready() -> Self {
        let demo = Self::new();
        demo.sim(&["personalise", "--record", "record.json", "--transport-key-file", "transport.key"]).ok();
        demo.sim(&["account", "add", "--account", ACCOUNT, "--nickname", "main"]).ok();
        demo.sim(&["merchant", "add", "--id", "COFFEE-SHOP-01", "--name", "Corner coffee"]).ok();
        demo.sim(&["merchant", "add", "--id", "BOOKSTORE-0042"]).ok();
        demo
    }

    fn pay(&self, order: &str, amount: &str) -> Vec<u8> {
        let run = self
            .sim_env(
                &[
                    "pay",
                    "--merchant",
                    "COFFEE-SHOP-01",
                    "--order",
                    order,
                    "--amount",
                    amount,
                    "--currency",
                    "EUR",
                    "--yes",
                ],
                &[("MPS_SIM_PASSWORD", PASSWORD)],
            )
            .ok();
        BASE64.decode(run.stdout.trim()).unwrap()
    }

    fn issuer_answer(&self, packet: &[u8]) -> Vec<u8> {
        self.issuer.lock().unwrap().answer(packet, &mut rand::rngs::OsRng).unwrap().answer.to_vec()
    }

    fn profile_bytes(&self) -> Vec<u8> {
        std::fs::read(self.profile()).unwrap()
    }

    /// Runs `args` and checks it fails with `message` and a hint, and leaves the profile as it was.
    fn refused(&self, args: &[&str], env: &[(&str, &str)], message: &str) {
        let before = self.profile_bytes();
        let run = self.sim_env(args, env);
        assert_ne!(run.code, 0, "{args:?} must fail; stdout: {}", run.stdout);
        assert!(run.stderr.contains(message), "{args:?}: expected {message:?} in:\n{}", run.stderr);
        assert!(run.stderr.contains("hint:"), "{args:?}: no hint in:\n{}", run.stderr);
        assert!(self.profile_bytes() == before, "{args:?} changed the profile");
        assert!(!run.stderr.contains(ACCOUNT) && !run.stdout.contains(ACCOUNT), "full account number shown");
    }

    /// Serves the soft issuer as a merchant endpoint on loopback, over `wrap` (plain or TLS).
    fn serve(&self, listener: TcpListener, tls: Option<Arc<rustls::ServerConfig>>) {
        let issuer = Arc::clone(&self.issuer);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let stream = stream.unwrap();
                let issuer = Arc::clone(&issuer);
                // Order "W-REV" plays a payment the merchant reversed after it went unanswered.
                let handler = move |packet: &[u8]| match issuer.lock().unwrap().answer(packet, &mut rand::rngs::OsRng) {
                    Ok(answered)
                        if PayerPacket::decode(packet).is_ok_and(|p| p.fields.order_no.as_str() == "W-REV") =>
                    {
                        http::Reply::Reversed {
                            response_code: answered.response_code,
                            answer: answered.answer.to_vec(),
                        }
                    }
                    Ok(answered) => {
                        http::Reply::Answer { response_code: answered.response_code, answer: answered.answer.to_vec() }
                    }
                    Err(error) => http::Reply::NoAnswer { response_code: error.response_code().into() },
                };
                match &tls {
                    None => {
                        let mut stream = stream;
                        let _ = http::serve_one(&mut stream, handler);
                    }
                    Some(config) => {
                        let connection = rustls::ServerConnection::new(Arc::clone(config)).unwrap();
                        let mut stream = rustls::StreamOwned::new(connection, stream);
                        let _ = http::serve_one(&mut stream, handler);
                        stream.conn.send_close_notify();
                        let _ = stream.flush();
                    }
                }
            }
        });
    }
}

fn counter_of(packet: &[u8]) -> u64 {
    PayerPacket::decode(packet).unwrap().fields.counter.value()
}

#[test]
fn personalise_pay_answer_and_pay_again_with_the_next_keys() {
    let demo = Demo::ready();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(demo.profile()).unwrap().permissions()) & 0o777,
        0o600
    );

    let packet = demo.pay("ORD-1", "12.5");
    assert_eq!(packet.len(), 113);
    assert_eq!(counter_of(&packet), 1);
    let decoded = PayerPacket::decode(&packet).unwrap();
    assert_eq!(decoded.fields.amount.minor(), 1250);
    assert_eq!(decoded.fields.merchant_id.as_str(), "COFFEE-SHOP-01");

    let answer = demo.issuer_answer(&packet);
    let run = demo.sim(&["answer", &BASE64.encode(&answer)]).ok();
    assert!(run.stdout.contains("APPROVED (00 approved)"), "{}", run.stdout);
    assert!(run.stdout.contains("Available balance: 987.50 EUR"), "{}", run.stdout);
    assert!(run.stdout.contains("Auth code:"), "{}", run.stdout);

    // Session 2 is built with CK_1 and RSN_2: the issuer's MAC check proves the SIM advanced.
    let packet = demo.pay("ORD-2", "3.80");
    assert_eq!(counter_of(&packet), 2);
    let answer = demo.issuer_answer(&packet);
    let run = demo.sim(&["answer", &hex::encode(&answer)]).ok();
    assert!(run.stdout.contains("Available balance: 983.70 EUR"), "{}", run.stdout);

    // A decline (insufficient funds) is read too: exit 3, and the keys still move on.
    let packet = demo.pay("ORD-3", "5000");
    let answer = demo.issuer_answer(&packet);
    std::fs::write(demo.path("answer.bin"), &answer).unwrap();
    let run = demo.sim(&["answer", "@answer.bin"]);
    assert_eq!(run.code, 3, "{}", run.stderr);
    assert!(run.stdout.contains("DECLINED (51 insufficient funds)"), "{}", run.stdout);
    let packet = demo.pay("ORD-4", "1");
    assert_eq!(counter_of(&packet), 4);
    demo.issuer_answer(&packet);

    let status = demo.sim(&["status"]).ok();
    assert!(
        status.stdout.contains("Issuer 400012: SIM 8949012345678901234, 3 payment(s) completed, payment #4 PENDING")
    );
    let chain_key =
        serde_json::from_slice::<serde_json::Value>(&demo.profile_bytes()).unwrap()["key_sets"][0]["chain_key"]
            .as_str()
            .unwrap()
            .to_owned();
    assert!(!status.stdout.contains(&chain_key) && !status.stdout.contains(ACCOUNT));
    assert!(!demo.sim(&["account", "list"]).ok().stdout.contains(ACCOUNT));
}

#[test]
fn a_pending_payment_blocks_the_next_and_resend_repeats_it_byte_for_byte() {
    let demo = Demo::ready();
    let packet = demo.pay("ORD-1", "12.50");
    demo.refused(
        &["pay", "--merchant", "COFFEE-SHOP-01", "--order", "ORD-2", "--amount", "1", "--currency", "EUR", "--yes"],
        &[("MPS_SIM_PASSWORD", PASSWORD)],
        "payment 1 for issuer 400012 is still waiting for its answer",
    );
    let run = demo.sim(&["resend"]).ok();
    assert_eq!(BASE64.decode(run.stdout.trim()).unwrap(), packet);
    let run = demo.sim(&["resend", "--hex"]).ok();
    assert_eq!(hex::decode(run.stdout.trim()).unwrap(), packet);
    demo.sim(&["resend", "--out", "again.bin"]).ok();
    assert_eq!(std::fs::read(demo.path("again.bin")).unwrap(), packet);

    // The issuer answers a byte-identical retransmission with the same answer.
    let first = demo.issuer_answer(&packet);
    assert_eq!(demo.issuer_answer(&packet), first);
    demo.sim(&["answer", &BASE64.encode(&first)]).ok();
    demo.refused(&["resend"], &[], "no payment is waiting for an answer");
}

#[test]
fn bad_inputs_are_refused_clearly_and_change_nothing() {
    let demo = Demo::ready();
    let pay = |extra: &[&'static str]| {
        let mut args = vec!["pay", "--yes"];
        args.extend_from_slice(extra);
        args
    };
    let password = [("MPS_SIM_PASSWORD", PASSWORD)];
    let base = ["--merchant", "COFFEE-SHOP-01", "--order", "ORD-1", "--currency", "EUR"];
    let with = |more: &[&'static str]| {
        let mut args = pay(&base);
        args.extend_from_slice(more);
        args
    };
    demo.refused(&with(&["--amount", "12.505"]), &password, "EUR has 2 decimal places");
    demo.refused(&with(&["--amount", "12,50"]), &password, "is not an amount");
    demo.refused(&with(&["--amount", "0"]), &password, "greater than zero");
    demo.refused(&with(&["--amount-minor", "12.50"]), &password, "is not an amount");
    demo.refused(
        &pay(&["--merchant", "NOBODY", "--order", "ORD-1", "--amount", "1", "--currency", "EUR"]),
        &password,
        "no merchant \"NOBODY\" is registered",
    );
    demo.refused(
        &pay(&["--merchant", "COFFEE-SHOP-01", "--order", "ORD-1", "--amount", "1", "--currency", "XYZ"]),
        &password,
        "not a currency this SIM knows",
    );
    demo.refused(
        &pay(&["--merchant", "COFFEE-SHOP-01", "--order", "ORD-1", "--amount", "1", "--currency", "999"]),
        &password,
        "not a currency this SIM knows",
    );
    demo.refused(
        &pay(&["--merchant", "COFFEE-SHOP-01", "--order", "THIRTEEN-CHAR", "--amount", "1", "--currency", "EUR"]),
        &password,
        "order_no must have 1 to 12 characters",
    );
    demo.refused(&with(&["--amount", "1", "--account", "9999"]), &password, "no account matches \"9999\"");
    demo.refused(&with(&["--amount", "1"]), &[("MPS_SIM_PASSWORD", "abc")], "payment password must have 4 to 12");
    demo.refused(&with(&["--amount", "1"]), &[], "missing --password-stdin");
    demo.refused(
        &pay(&["--merchant", "COFFEE-SHOP-01", "--currency", "EUR", "--amount", "1"]),
        &password,
        "missing --order: there is no terminal to ask on",
    );
    demo.refused(&with(&["--amount", "1", "--send", "ftp://127.0.0.1/"]), &password, "must start with http://");
    demo.refused(&with(&["--amount", "1", "--send"]), &password, "merchant COFFEE-SHOP-01 has no registered URL");
    demo.refused(&with(&["--amount", "1", "--send", "https://127.0.0.1:1/pay"]), &password, "needs merchant_ca_file");

    // Personalisation: wrong transport key, damaged records, an issuer personalised already.
    std::fs::write(demo.path("wrong.key"), "00".repeat(32)).unwrap();
    demo.refused(
        &["personalise", "--record", "record.json", "--transport-key-file", "wrong.key", "--force"],
        &[],
        "does not unwrap under this transport key",
    );
    std::fs::write(demo.path("short.key"), "abcd").unwrap();
    demo.refused(
        &["personalise", "--record", "record.json", "--transport-key-file", "short.key", "--force"],
        &[],
        "exactly 64 hex digits",
    );
    std::fs::write(demo.path("garbage.json"), "{ not json").unwrap();
    demo.refused(
        &["personalise", "--record", "garbage.json", "--transport-key-file", "transport.key"],
        &[],
        "not valid JSON",
    );
    let mut record: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(demo.path("record.json")).unwrap()).unwrap();
    record["iin"] = "40001".into();
    std::fs::write(demo.path("bad-iin.json"), record.to_string()).unwrap();
    demo.refused(
        &["personalise", "--record", "bad-iin.json", "--transport-key-file", "transport.key"],
        &[],
        "field iin is invalid",
    );
    demo.refused(
        &["personalise", "--record", "record.json", "--transport-key-file", "transport.key"],
        &[],
        "already holds a key set for issuer 400012",
    );
    demo.refused(&["personalise", "--record", "record.json"], &[], "no transport key");

    // Accounts and merchants.
    demo.refused(&["account", "add", "--account", ACCOUNT], &[], "is already registered");
    demo.refused(&["account", "add", "--account", "12345"], &[], "account must have 12 to 19 characters");
    demo.refused(
        &["account", "add", "--account", "4000120000009999", "--issuer", "999999"],
        &[],
        "no key set for issuer 999999",
    );
    demo.refused(
        &["account", "add", "--account", "4000120000009999", "--nickname", "main"],
        &[],
        "already called \"main\"",
    );
    demo.refused(&["account", "remove", "0000"], &[], "no account matches");
    demo.refused(&["merchant", "add", "--id", "COFFEE-SHOP-01"], &[], "already registered");
    demo.refused(&["merchant", "add", "--id", "SIXTEEN-CHARS-XX"], &[], "merchant_id must have 1 to 15");
    demo.refused(&["merchant", "add", "--id", "NEW", "--url", "gopher://x"], &[], "must start with http://");
    demo.refused(&["merchant", "remove", "NOBODY"], &[], "no merchant");

    // Answers: not an answer, tampered, for the wrong counter, read twice.
    demo.refused(&["answer", "AAAA"], &[], "the answer must be 79 bytes");
    demo.refused(&["answer", "AAAA"], &[], "hint:");
    let packet = demo.pay("ORD-1", "1");
    let answer = demo.issuer_answer(&packet);
    for bit in [0usize, 8, 60, 23 * 8, 78 * 8 + 7] {
        let mut tampered = answer.clone();
        tampered[bit / 8] ^= 1 << (bit % 8);
        let expected = match bit / 8 {
            0 => "has type 0x80",
            1..=6 => "the answer is for payment",
            _ => "the answer does not verify",
        };
        demo.refused(&["answer", &BASE64.encode(&tampered)], &[], expected);
    }
    let mut other_counter = answer.clone();
    other_counter[6] = 3;
    demo.refused(
        &["answer", &BASE64.encode(&other_counter)],
        &[],
        "the answer is for payment 3, but the pending payment is 1",
    );
    demo.sim(&["answer", &BASE64.encode(&answer)]).ok();
    demo.refused(&["answer", &BASE64.encode(&answer)], &[], "which was completed earlier");
    demo.refused(&["answer", &BASE64.encode(&answer), "--issuer", "12345"], &[], "--issuer");

    // A damaged profile is refused, not rewritten.
    let mut profile: serde_json::Value = serde_json::from_slice(&demo.profile_bytes()).unwrap();
    profile["key_sets"][0]["chain_key"] = "zz".into();
    std::fs::write(demo.profile(), profile.to_string()).unwrap();
    demo.refused(&["status"], &[], "invalid key: expected 64 hex digits");
    assert!(!demo.sim(&["status"]).stderr.contains("zz\""));
}

#[test]
fn prompts_ask_again_on_bad_input_and_cancel_changes_nothing() {
    let demo = Demo::ready();
    // Two merchants: chosen at the prompt. Bad answers at each prompt are asked again.
    let input = "7\nCOFFEE-SHOP-01\nTHIS-ORDER-IS-TOO-LONG\nORD-9\nXYZ\nEUR\n12.505\n12.5\nmaybe\ny\nabc\n2468ab\n";
    let run = demo.sim_stdin(&["pay", "--interactive", "always"], &[], input).ok();
    for message in [
        "choose a number from 1 to 2. Please try again.",
        "order_no must have 1 to 12 characters, got 22. Please try again.",
        "\"XYZ\" is not a currency this SIM knows: use a code like EUR or 978. Please try again.",
        "EUR has 2 decimal places; \"12.505\" has more. Please try again.",
        "answer y or n. Please try again.",
        "payment password must have 4 to 12 characters, got 3. Please try again.",
        "Amount:   12.50 EUR",
        "Merchant: Corner coffee (COFFEE-SHOP-01)",
    ] {
        assert!(run.stderr.contains(message), "expected {message:?} in:\n{}", run.stderr);
    }
    let packet = BASE64.decode(run.stdout.trim()).unwrap();
    assert_eq!(PayerPacket::decode(&packet).unwrap().fields.amount.minor(), 1250);
    demo.sim(&["answer", &BASE64.encode(demo.issuer_answer(&packet))]).ok();

    // Saying no at the confirmation builds nothing.
    let before = demo.profile_bytes();
    let run = demo.sim_stdin(
        &["pay", "--interactive", "always", "--merchant", "BOOKSTORE-0042", "--order", "X", "--currency", "EUR"],
        &[],
        "1.00\nn\n",
    );
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("payment cancelled: nothing was built or stored"), "{}", run.stderr);
    assert_eq!(demo.profile_bytes(), before);

    // Running out of answers gives up cleanly.
    let run = demo.sim_stdin(&["pay", "--interactive", "always", "--merchant", "BOOKSTORE-0042"], &[], "");
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("end of input"), "{}", run.stderr);
    assert_eq!(demo.profile_bytes(), before);

    // --password-stdin reads the password from stdin without any other prompt.
    let run = demo
        .sim_stdin(
            &[
                "pay",
                "--merchant",
                "BOOKSTORE-0042",
                "--order",
                "B-1",
                "--amount-minor",
                "250",
                "--currency",
                "978",
                "--yes",
                "--password-stdin",
            ],
            &[],
            "2468ab\n",
        )
        .ok();
    assert_eq!(counter_of(&BASE64.decode(run.stdout.trim()).unwrap()), 2);
}

#[test]
fn pay_send_over_http_opens_the_answer_at_once() {
    let demo = Demo::ready();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/pay", listener.local_addr().unwrap());
    demo.serve(listener, None);
    demo.sim(&["merchant", "add", "--id", "WEB-SHOP", "--url", &url]).ok();
    let args =
        ["pay", "--merchant", "WEB-SHOP", "--order", "W-1", "--amount", "20", "--currency", "EUR", "--yes", "--send"];
    let run = demo.sim_env(&args, &[("MPS_SIM_PASSWORD", PASSWORD)]).ok();
    assert!(run.stdout.contains("APPROVED (00 approved)"), "{}\n{}", run.stdout, run.stderr);
    assert!(run.stdout.contains("980.00 EUR"), "{}", run.stdout);

    // A wrong password is declined by the issuer (55): the answer is still read, exit 3.
    let args =
        ["pay", "--merchant", "WEB-SHOP", "--order", "W-2", "--amount", "1", "--currency", "EUR", "--yes", "--send"];
    let run = demo.sim_env(&args, &[("MPS_SIM_PASSWORD", "wrong-pass")]);
    assert_eq!(run.code, 3, "{}", run.stderr);
    assert!(run.stdout.contains("DECLINED (55 incorrect payment password)"), "{}", run.stdout);

    // A payment the merchant reversed after it went unanswered: the SIM still reads the bank's
    // answer (its keys move on), and sim says the payment was reversed.
    let args =
        ["pay", "--merchant", "WEB-SHOP", "--order", "W-REV", "--amount", "1", "--currency", "EUR", "--yes", "--send"];
    let run = demo.sim_env(&args, &[("MPS_SIM_PASSWORD", PASSWORD)]).ok();
    assert!(run.stdout.contains("APPROVED"), "{}", run.stdout);
    assert!(run.stderr.contains("REVERSED this payment"), "{}", run.stderr);

    // The issuer loses its state for this SIM (counter out of step): no answer, the payment stays
    // pending (exit 4); once the issuer is back in step, resend --send completes it.
    let saved_counter = {
        let mut issuer = demo.issuer.lock().unwrap();
        let counter = issuer.sims[0].counter;
        issuer.sims[0].counter += 5;
        counter
    };
    let args = [
        "pay",
        "--merchant",
        "WEB-SHOP",
        "--order",
        "W-3",
        "--amount",
        "1",
        "--currency",
        "EUR",
        "--yes",
        "--send",
        &url,
    ];
    let run = demo.sim_env(&args, &[("MPS_SIM_PASSWORD", PASSWORD)]);
    assert_eq!(run.code, 4, "{}", run.stderr);
    assert!(run.stderr.contains("response code 63 (security violation)"), "{}", run.stderr);
    assert!(demo.sim(&["status"]).ok().stdout.contains("payment #4 PENDING"));
    demo.issuer.lock().unwrap().sims[0].counter = saved_counter;
    let run = demo.sim(&["resend", "--send"]).ok();
    assert!(run.stdout.contains("Payment #4 at issuer 400012: APPROVED"), "{}", run.stdout);

    // Nobody listening: a clear error, the payment stays pending.
    let closed = TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_url = format!("http://{}/pay", closed.local_addr().unwrap());
    drop(closed);
    let args = [
        "pay",
        "--merchant",
        "WEB-SHOP",
        "--order",
        "W-4",
        "--amount",
        "1",
        "--currency",
        "EUR",
        "--yes",
        "--send",
        &dead_url,
    ];
    let run = demo.sim_env(&args, &[("MPS_SIM_PASSWORD", PASSWORD)]);
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("sending to the merchant failed"), "{}", run.stderr);
    assert!(run.stderr.contains("sim resend --send"), "{}", run.stderr);
    assert!(demo.sim(&["status"]).ok().stdout.contains("payment #5 PENDING"));
}

#[test]
fn pay_send_over_https_trusts_only_the_configured_ca() {
    let demo = Demo::ready();
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let ca = rcgen::Issuer::new(ca_params, ca_key);
    let server_key = rcgen::KeyPair::generate().unwrap();
    let server_cert =
        rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap().signed_by(&server_key, &ca).unwrap();
    std::fs::write(demo.path("merchant-ca.pem"), ca_cert.pem()).unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let server_config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![server_cert.der().clone()],
            rustls_pki_types::PrivateKeyDer::try_from(server_key.serialize_der()).unwrap(),
        )
        .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("https://localhost:{}/pay", listener.local_addr().unwrap().port());
    demo.serve(listener, Some(Arc::new(server_config)));

    // Without the CA the handshake fails: nothing is approved, the payment stays pending.
    std::fs::write(
        demo.path("other-ca.pem"),
        rcgen::generate_simple_self_signed(vec!["x".to_owned()]).unwrap().cert.pem(),
    )
    .unwrap();
    let args = [
        "pay",
        "--merchant",
        "COFFEE-SHOP-01",
        "--order",
        "S-1",
        "--amount",
        "2",
        "--currency",
        "EUR",
        "--yes",
        "--send",
        &url,
    ];
    let run = demo.sim_env(&args, &[("MPS_SIM_PASSWORD", PASSWORD), ("MPS_SIM__MERCHANT_CA_FILE", "other-ca.pem")]);
    assert_eq!(run.code, 1, "{}", run.stdout);
    assert!(run.stderr.contains("sending to the merchant failed"), "{}", run.stderr);

    // With the merchant's CA (from a config file this time) the same packet goes through.
    std::fs::write(demo.path("sim.toml"), "merchant_ca_file = \"merchant-ca.pem\"\nsend_timeout_ms = 10000\n").unwrap();
    let run = demo.sim(&["--config", "sim.toml", "resend", "--send", &url]).ok();
    assert!(run.stdout.contains("Payment #1 at issuer 400012: APPROVED"), "{}\n{}", run.stdout, run.stderr);
}

#[test]
fn saves_leave_no_temporary_files_and_keys_stay_out_of_output() {
    let demo = Demo::ready();
    let packet = demo.pay("ORD-1", "1");
    let run = demo.sim(&["answer", &BASE64.encode(demo.issuer_answer(&packet))]).ok();
    assert!(!run.stdout.contains(&demo.transport_key_hex));
    let mut names: Vec<String> =
        std::fs::read_dir(demo.dir.path()).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    names.sort();
    assert_eq!(names, ["profile.json", "record.json", "transport.key"]);
    // The profile parses back and keeps only the current chain key (one key per issuer).
    let profile: serde_json::Value = serde_json::from_slice(&demo.profile_bytes()).unwrap();
    let key_set = &profile["key_sets"][0];
    assert_eq!(key_set["counter"], 1);
    assert_eq!(key_set["chain_key"].as_str().unwrap().len(), 64);
    assert!(key_set.get("pending").is_none());
    assert!(!Path::new(&demo.path(".profile.json.tmp-")).exists());
}

#[test]
fn a_second_sim_is_refused_while_the_first_holds_the_profile() {
    use std::io::Read;
    let demo = Demo::ready();
    let mut first = demo
        .command(&["pay", "--interactive", "always", "--merchant", "COFFEE-SHOP-01"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until the first is at its prompt (it holds the lock from load to save).
    let mut stderr = first.stderr.take().unwrap();
    let mut seen = Vec::new();
    let mut buffer = [0u8; 256];
    while !String::from_utf8_lossy(&seen).contains("Order number") {
        let read = stderr.read(&mut buffer).unwrap();
        assert_ne!(read, 0, "the first sim ended early: {}", String::from_utf8_lossy(&seen));
        seen.extend_from_slice(&buffer[..read]);
    }
    demo.refused(&["merchant", "add", "--id", "NEW"], &[], "another sim process is using the profile");
    // Reading is not blocked.
    demo.sim(&["status"]).ok();
    drop(first.stdin.take());
    let status = first.wait().unwrap();
    assert_eq!(status.code(), Some(1));
    demo.sim(&["merchant", "add", "--id", "NEW"]).ok();
}
