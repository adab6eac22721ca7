//! The `sim` commands of a payment: pay (paper, section 6, steps 4-5), answer (step 9) and
//! resend (a retransmission of the same bytes after a lost answer).

use std::io::{BufRead, Write};
use std::path::PathBuf;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use clap::Args;
use mps_protocol::ids::format_minor;
use mps_protocol::wire::ANSWER_LEN;
use mps_protocol::{Currency, Iin, MerchantId, OrderNo, Password, ResponseCode};
use mps_sim::{AccountEntry, AnswerOutcome, MerchantEntry, PaymentRequest, PaymentSummary, Profile, SimError};
use rand::RngCore;
use zeroize::Zeroizing;

use crate::config::Config;
use crate::error::{CliError, EXIT_DECLINED, EXIT_NO_ANSWER, EXIT_OK};
use crate::prompt::Prompter;
use crate::{Context, OutputArgs, send};

/// `sim pay`.
#[derive(Debug, Args)]
pub struct PayArgs {
    /// The account to pay from: nickname, last 4 digits or full number. Asked for when missing
    /// and there are several.
    #[arg(long)]
    account: Option<String>,
    /// The merchant id to pay. Asked for when missing and there are several.
    #[arg(long)]
    merchant: Option<String>,
    /// The merchant's order number (1 to 12 printable characters). Asked for when missing.
    #[arg(long)]
    order: Option<String>,
    /// The amount in the currency's major units, exactly: 12.50 or 12.5 (no rounding: more
    /// decimals than the currency has are refused). Asked for when missing.
    #[arg(long, conflicts_with = "amount_minor")]
    amount: Option<String>,
    /// The amount in minor units instead: 1250 is 12.50 EUR.
    #[arg(long, value_name = "MINOR_UNITS")]
    amount_minor: Option<String>,
    /// The currency: ISO 4217 alphabetic or numeric code (EUR or 978). Defaults to
    /// default_currency from the config; asked for when neither is set.
    #[arg(long)]
    currency: Option<String>,
    /// Do not ask to confirm the summary.
    #[arg(long)]
    yes: bool,
    /// Read the payment password from a line of stdin (else MPS_SIM_PASSWORD, else asked for
    /// without echo).
    #[arg(long)]
    password_stdin: bool,
    #[command(flatten)]
    output: OutputArgs,
}

/// `sim answer`.
#[derive(Debug, Args)]
pub struct AnswerArgs {
    /// The issuer's 79-byte answer: base64, hex, @FILE (raw bytes or text) or - for stdin.
    answer: String,
    /// The issuer the answer is from, when payments are pending at several.
    #[arg(long, value_name = "IIN")]
    issuer: Option<String>,
}

/// `sim resend`.
#[derive(Debug, Args)]
pub struct ResendArgs {
    /// The issuer whose pending payment to resend, when payments are pending at several.
    #[arg(long, value_name = "IIN")]
    issuer: Option<String>,
    #[command(flatten)]
    output: OutputArgs,
}

fn parse_issuer(text: Option<String>) -> Result<Option<Iin>, CliError> {
    text.map(|t| Iin::new(&t).map_err(|e| CliError::input(format!("--issuer: {e}")))).transpose()
}

fn resolve_account<R: BufRead, W: Write>(
    profile: &Profile,
    given: Option<String>,
    prompter: &mut Prompter<R, W>,
) -> Result<AccountEntry, CliError> {
    if let Some(selector) = given {
        return Ok(profile.find_account(&selector)?.clone());
    }
    match profile.accounts() {
        [] => Err(CliError::input("no accounts yet: add one with `sim account add`".into())),
        [only] => {
            prompter.say(&format!("Paying from {}.", only.label()));
            Ok(only.clone())
        }
        accounts => {
            let labels: Vec<String> = accounts.iter().map(AccountEntry::label).collect();
            let index = prompter.choose("--account", "Accounts", &labels, |answer| {
                let entry = profile.find_account(answer).map_err(|e| e.to_string())?;
                accounts.iter().position(|a| a == entry).ok_or_else(|| "no such account".to_owned())
            })?;
            Ok(accounts[index].clone())
        }
    }
}

fn resolve_merchant<R: BufRead, W: Write>(
    profile: &Profile,
    given: Option<String>,
    prompter: &mut Prompter<R, W>,
) -> Result<MerchantEntry, CliError> {
    if let Some(merchant_id) = given {
        return Ok(profile.find_merchant(&merchant_id)?.clone());
    }
    match profile.merchants() {
        [] => Err(CliError::input("no merchants yet: add one with `sim merchant add --id <merchant id>`".into())),
        [only] => {
            prompter.say(&format!("Paying {}.", only.label()));
            Ok(only.clone())
        }
        merchants => {
            let labels: Vec<String> = merchants.iter().map(MerchantEntry::label).collect();
            let index = prompter.choose("--merchant", "Merchants", &labels, |answer| {
                merchants
                    .iter()
                    .position(|m| m.merchant_id.as_str() == answer)
                    .ok_or_else(|| format!("no merchant {answer:?} is registered"))
            })?;
            Ok(merchants[index].clone())
        }
    }
}

fn resolve_currency<R: BufRead, W: Write>(
    given: Option<String>,
    default: Option<Currency>,
    prompter: &mut Prompter<R, W>,
) -> Result<Currency, CliError> {
    let parse = |text: &str| {
        Currency::parse(text)
            .map_err(|_| format!("{text:?} is not a currency this SIM knows: use a code like EUR or 978"))
    };
    match (given, default) {
        (Some(text), _) => parse(&text).map_err(|e| CliError::input(format!("--currency: {e}"))),
        (None, Some(currency)) => Ok(currency),
        (None, None) => prompter.ask("--currency", "Currency (like EUR or 978)", parse),
    }
}

fn resolve_amount<R: BufRead, W: Write>(
    args: &PayArgs,
    currency: Currency,
    prompter: &mut Prompter<R, W>,
) -> Result<mps_protocol::Amount, CliError> {
    if let Some(text) = &args.amount {
        return mps_sim::parse_major_amount(text, currency).map_err(|e| CliError::input(format!("--amount: {e}")));
    }
    if let Some(text) = &args.amount_minor {
        return mps_sim::parse_minor_amount(text).map_err(|e| CliError::input(format!("--amount-minor: {e}")));
    }
    let example = format_minor(1250, currency);
    prompter.ask("--amount", &format!("Amount in {currency} (like {example})"), |text| {
        mps_sim::parse_major_amount(text, currency).map_err(|e| e.to_string())
    })
}

fn read_password<R: BufRead, W: Write>(
    password_stdin: bool,
    prompter: &mut Prompter<R, W>,
) -> Result<Password, CliError> {
    if password_stdin {
        let line = prompter.read_line()?;
        return Password::new(&line).map_err(|e| CliError::input(format!("password from stdin: {e}")));
    }
    if let Ok(value) = std::env::var("MPS_SIM_PASSWORD") {
        let value = Zeroizing::new(value);
        return Password::new(&value).map_err(|e| CliError::input(format!("MPS_SIM_PASSWORD: {e}")));
    }
    prompter.password()
}

/// Where the packet will go, checked before anything is built.
enum Destination {
    Stdout { hex: bool },
    File(PathBuf),
    Merchant(String),
}

fn destination(
    output: &OutputArgs,
    merchant: Option<&MerchantEntry>,
    merchant_id: MerchantId,
    config: &Config,
) -> Result<Destination, CliError> {
    if let Some(url) = &output.send {
        let url = if url.is_empty() {
            merchant.and_then(|m| m.url.clone()).ok_or_else(|| {
                CliError::input(format!(
                    "merchant {merchant_id} has no registered URL: pass --send <url>, or register one with `sim merchant add --url`"
                ))
            })?
        } else {
            url.clone()
        };
        send::check_destination(&url, config)?;
        return Ok(Destination::Merchant(url));
    }
    if let Some(path) = &output.out {
        return Ok(Destination::File(path.clone()));
    }
    Ok(Destination::Stdout { hex: output.hex })
}

/// `sim pay`.
pub fn pay(context: &Context, args: PayArgs) -> Result<u8, CliError> {
    let mut profile = Profile::load(&context.profile_path)?;
    let mut prompter = Prompter::stdio(context.interactive);
    let account = resolve_account(&profile, args.account.clone(), &mut prompter)?;
    if let Some(pending) = profile.pending(account.iin) {
        let counter = pending.summary().counter.value();
        return Err(SimError::PaymentPending { iin: account.iin, counter }.into());
    }
    let merchant = resolve_merchant(&profile, args.merchant.clone(), &mut prompter)?;
    let destination = destination(&args.output, Some(&merchant), merchant.merchant_id, &context.config)?;
    let order_no = match &args.order {
        Some(text) => OrderNo::new(text).map_err(|e| CliError::input(format!("--order: {e}")))?,
        None => prompter.ask("--order", "Order number (1 to 12 characters)", |text| {
            OrderNo::new(text).map_err(|e| e.to_string())
        })?,
    };
    let currency = resolve_currency(args.currency.clone(), context.config.default_currency, &mut prompter)?;
    let amount = resolve_amount(&args, currency, &mut prompter)?;
    let request = PaymentRequest {
        account: account.account.clone(),
        merchant_id: merchant.merchant_id,
        order_no,
        amount,
        currency,
    };

    let summary = profile.preview_payment(&request)?;
    prompter.say("Please check the payment:");
    for line in summary.lines() {
        prompter.say(&format!("  {line}"));
    }
    if !args.yes && !prompter.confirm("Pay?")? {
        return Err(CliError::Cancelled);
    }
    let password = read_password(args.password_stdin, &mut prompter)?;

    let mut iv = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut iv);
    let packet = profile.prepare_payment(&request, &password, iv)?;
    drop(password);
    // The pending payment is durable before the packet leaves: a crash now loses nothing.
    profile.save(&context.profile_path)?;
    deliver(context, &mut profile, &packet.encode(), &summary, destination)
}

/// Prints, writes or sends the packet; a sent packet's answer is opened at once.
fn deliver(
    context: &Context,
    profile: &mut Profile,
    packet: &[u8],
    summary: &PaymentSummary,
    destination: Destination,
) -> Result<u8, CliError> {
    let counter = summary.counter.value();
    match destination {
        Destination::Stdout { hex } => {
            println!("{}", if hex { hex::encode(packet) } else { BASE64.encode(packet) });
            eprintln!(
                "Payment #{counter} is pending: give the packet to the merchant, then read the answer with `sim answer <answer>`."
            );
            Ok(EXIT_OK)
        }
        Destination::File(path) => {
            std::fs::write(&path, packet).map_err(|e| {
                CliError::input(format!(
                    "cannot write {}: {e} (the payment is pending: `sim resend --out <file>`)",
                    path.display()
                ))
            })?;
            eprintln!("Wrote the {}-byte packet of payment #{counter} to {}.", packet.len(), path.display());
            eprintln!("It is pending: read the answer with `sim answer <answer>`.");
            Ok(EXIT_OK)
        }
        Destination::Merchant(url) => {
            eprintln!("Sending payment #{counter} to {url} ...");
            let reply = send::send_packet(&url, packet, &context.config)?;
            match reply.payer_answer {
                Some(answer) => {
                    let outcome = profile.open_answer(&answer, Some(summary.iin))?;
                    profile.save(&context.profile_path)?;
                    let code = print_outcome(&outcome);
                    if reply.order_status.as_deref() == Some("reversed") {
                        eprintln!(
                            "The merchant REVERSED this payment (unanswered in time, or the order was paid already)."
                        );
                        eprintln!(
                            "Whatever the answer above says, the bank undoes it; the account statement shows both."
                        );
                    }
                    Ok(code)
                }
                None => {
                    let code = reply.response_code.unwrap_or_else(|| "none".into());
                    let meaning = ResponseCode::parse(&code).map(|c| c.meaning()).unwrap_or("unknown code");
                    eprintln!("The merchant relayed response code {code} ({meaning}) without an answer for the SIM:");
                    eprintln!("the issuer did not accept the packet. Payment #{counter} stays pending;");
                    eprintln!("`sim resend --send` sends the same packet again.");
                    Ok(EXIT_NO_ANSWER)
                }
            }
        }
    }
}

fn print_outcome(outcome: &AnswerOutcome) -> u8 {
    let payment = &outcome.payment;
    let answer = &outcome.answer;
    let verdict = if outcome.approved() { "APPROVED" } else { "DECLINED" };
    println!(
        "Payment #{} at issuer {}: {verdict} ({} {})",
        payment.counter.value(),
        payment.iin,
        answer.response_code,
        answer.response_code.meaning()
    );
    println!(
        "  {} to {}, order {}",
        payment.amount.display_in(payment.currency),
        payment.merchant_name.as_deref().unwrap_or(payment.merchant_id.as_str()),
        payment.order_no
    );
    if !answer.auth_code.is_none() {
        println!("  Auth code:         {}", answer.auth_code.as_str());
    }
    if answer.response_code.discloses_balance() {
        println!("  Available balance: {}", format_minor(i128::from(answer.balance), answer.currency));
    } else {
        println!("  Available balance: not disclosed for this outcome");
    }
    println!("  Transaction:       {}", answer.txn_id.to_hex());
    eprintln!("The SIM's keys for issuer {} moved on to payment #{}.", payment.iin, payment.counter.value() + 1);
    if outcome.approved() { EXIT_OK } else { EXIT_DECLINED }
}

/// `sim answer`.
pub fn answer(context: &Context, args: AnswerArgs) -> Result<u8, CliError> {
    let issuer = parse_issuer(args.issuer)?;
    let bytes = crate::blob::decode(&args.answer, ANSWER_LEN, "the answer")?;
    let mut profile = Profile::load(&context.profile_path)?;
    let outcome = profile.open_answer(&bytes, issuer)?;
    profile.save(&context.profile_path)?;
    Ok(print_outcome(&outcome))
}

/// `sim resend`.
pub fn resend(context: &Context, args: ResendArgs) -> Result<u8, CliError> {
    let issuer = parse_issuer(args.issuer)?;
    let mut profile = Profile::load(&context.profile_path)?;
    let pending = profile.pending_payment(issuer)?;
    let packet = *pending.packet();
    let summary = pending.summary().clone();
    let merchant = profile.find_merchant(summary.merchant_id.as_str()).ok().cloned();
    let destination = destination(&args.output, merchant.as_ref(), summary.merchant_id, &context.config)?;
    eprintln!("Sending again, byte for byte, payment #{}:", summary.counter.value());
    for line in summary.lines() {
        eprintln!("  {line}");
    }
    deliver(context, &mut profile, &packet, &summary, destination)
}
