//! The paper's flow end to end against the authorization server: a SIM pays, the merchant signs,
//! the gateway posts over mTLS, the bank approves; the SIM reads its answer and pays again with
//! the next keys. Also: retransmission, replay, a flipped bit, and every decline code of
//! DESIGN.md section 7 reached by a real request, each leaving balances as they were.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use mps_protocol::Currency;
use mps_tests::{AccountSpec, Bank};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn paper_flow_two_payments_with_the_next_keys() {
    let mut bank = Bank::start().await;
    let account = bank.create_account(&AccountSpec::debit("4000120000000001", "2468", 100_000)).await;
    let mut sim = bank.new_sim("8949012300000000001", &[&account]).await;

    let packet = sim.pay(&account, "ORDER-1", 1_250, "2468");
    let answer = bank.authorize(&packet, "ORDER-1", 1_250).await;
    assert_eq!(answer.status, 200, "{:?}", answer.json);
    assert_eq!(answer.code(), "00");
    assert_eq!(answer.json["auth_code"].as_str().map(str::len), Some(6));
    assert_eq!(answer.json["order_no"], "ORDER-1");
    bank.verify_bank_signature(&answer);
    let outcome = sim.read_answer(&answer);
    assert!(outcome.approved());
    assert_eq!(outcome.answer.balance, 98_750);
    assert_eq!(outcome.answer.currency, Currency::EUR);
    assert_eq!(bank.available(&account).await, 98_750);

    let packet = sim.pay(&account, "ORDER-2", 250, "2468");
    let answer = bank.authorize(&packet, "ORDER-2", 250).await;
    assert_eq!(answer.code(), "00");
    let outcome = sim.read_answer(&answer);
    assert_eq!(outcome.answer.balance, 98_500);
    assert_eq!(bank.available(&account).await, 98_500);
    assert!(bank.ledger.postings_sum_by_currency().await.unwrap().iter().all(|(_, sum)| *sum == 0));
    bank.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn retransmission_returns_the_stored_answer_and_replays_move_nothing() {
    let mut bank = Bank::start().await;
    let account = bank.create_account(&AccountSpec::debit("4000120000000002", "2468", 10_000)).await;
    let mut sim = bank.new_sim("8949012300000000002", &[&account]).await;

    let packet = sim.pay(&account, "R-1", 1_000, "2468");
    let first = bank.authorize(&packet, "R-1", 1_000).await;
    assert_eq!(first.code(), "00");
    // The answer was "lost": the SIM sends the same packet again (the merchant signs anew).
    let second = bank.authorize(&packet, "R-1", 1_000).await;
    assert_eq!(second.status, 200);
    assert_eq!(second.body, first.body, "a retransmission gets the byte-identical stored answer");
    assert_eq!(second.jws, first.jws);
    assert_eq!(bank.available(&account).await, 9_000, "booked once");
    sim.read_answer(&first);

    // Session 2 approved; then the old packet of session 1 is replayed: refused, nothing moves.
    let packet2 = sim.pay(&account, "R-2", 500, "2468");
    let answer2 = bank.authorize(&packet2, "R-2", 500).await;
    assert_eq!(answer2.code(), "00");
    sim.read_answer(&answer2);
    let replay = bank.authorize(&packet, "R-1", 1_000).await;
    assert_eq!(replay.code(), "63");
    assert!(replay.json["payer_answer"].is_null());
    assert_eq!(bank.available(&account).await, 8_500);

    // A packet with one flipped bit (in the ciphertext) is refused and moves nothing; the SIM's
    // genuine packet for that session still works afterwards.
    let packet3 = sim.pay(&account, "R-3", 100, "2468");
    let mut flipped = packet3.clone();
    flipped[80] ^= 0x01;
    let refused = bank.authorize(&flipped, "R-3", 100).await;
    assert_eq!(refused.code(), "63");
    assert_eq!(bank.available(&account).await, 8_500);
    let accepted = bank.authorize(&packet3, "R-3", 100).await;
    assert_eq!(accepted.code(), "00");
    assert_eq!(bank.available(&account).await, 8_400);

    // The stored counter with one bit different from the stored packet is no retransmission:
    // 63, and never the stored answer.
    let mut near_copy = packet3.clone();
    near_copy[100] ^= 0x80;
    let refused = bank.authorize(&near_copy, "R-3", 100).await;
    assert_eq!(refused.code(), "63");
    assert_ne!(refused.body, accepted.body);
    assert!(refused.json["payer_answer"].is_null());

    // The SIM is blocked after its payment was approved and booked: the retry of that payment
    // still gets the stored approval, byte for byte, and nothing moves.
    bank.ledger.set_sim_status(&sim.sim_id, mps_authz::ledger::SimStatus::Blocked).await.unwrap();
    let retry = bank.authorize(&packet3, "R-3", 100).await;
    assert_eq!(retry.status, 200);
    assert_eq!(retry.body, accepted.body, "a blocked SIM's retransmission gets its stored answer");
    assert_eq!(retry.jws, accepted.jws);
    sim.read_answer(&accepted);
    let next = sim.pay(&account, "R-4", 100, "2468");
    assert_eq!(bank.authorize(&next, "R-4", 100).await.code(), "62", "a new session of a blocked SIM is refused");
    assert_eq!(bank.available(&account).await, 8_400);
    bank.shutdown().await;
}

/// The same packet sent by eight callers at once: they all look at the SIM before the first
/// booking, and all but one find it moved once they hold its lock. Those run steps 5 to 7
/// again on the SIM as it is now, see a retransmission and answer with the stored answer: one
/// booking, eight byte-identical answers, no 503 from a second booking of the same session.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_same_packet_sent_at_once_is_booked_once_and_answered_alike() {
    let mut bank = Bank::start().await;
    let account = bank.create_account(&AccountSpec::debit("4000120000000003", "2468", 10_000)).await;
    let mut sim = bank.new_sim("8949012300000000003", &[&account]).await;

    let packet = sim.pay(&account, "AT-ONCE-1", 700, "2468");
    let send = || bank.authorize(&packet, "AT-ONCE-1", 700);
    let (a, b, c, d, e, f, g, h) = tokio::join!(send(), send(), send(), send(), send(), send(), send(), send());
    let answers = [a, b, c, d, e, f, g, h];
    for answer in &answers {
        assert_eq!(answer.status, 200, "{:?}", answer.json);
        assert_eq!(answer.code(), "00");
        assert_eq!(answer.body, answers[0].body, "every caller gets the one stored answer");
        assert_eq!(answer.jws, answers[0].jws);
    }
    assert_eq!(bank.available(&account).await, 9_300, "booked once");
    let stored = bank.ledger.sim(&sim.sim_id).await.unwrap().unwrap();
    assert_eq!(stored.counter.value(), 1, "one session");
    let outcome = sim.read_answer(&answers[0]);
    assert!(outcome.approved());

    // The SIM goes on with the next keys.
    let next = sim.pay(&account, "AT-ONCE-2", 300, "2468");
    assert_eq!(bank.authorize(&next, "AT-ONCE-2", 300).await.code(), "00");
    assert_eq!(bank.available(&account).await, 9_000);
    bank.shutdown().await;
}

/// An amount the ledger cannot book (above i64::MAX minor units) is a format error at step 2.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_amount_beyond_what_the_ledger_books_is_a_format_error() {
    let mut bank = Bank::start().await;
    let account = bank.create_account(&AccountSpec::debit("4000120000000009", "2468", 10_000)).await;
    let mut sim = bank.new_sim("8949012300000000009", &[&account]).await;
    // The SIM's packet says the same amount as the body, so only the amount's size is wrong.
    let packet = sim.pay(&account, "BIG-1", 1u64 << 63, "2468");
    let answer = bank.authorize(&packet, "BIG-1", 1u64 << 63).await;
    assert_eq!(answer.status, 400, "{:?}", answer.json);
    assert_eq!(answer.code(), "30");
    assert!(answer.json["detail"].as_str().unwrap_or_default().starts_with("amount"), "{:?}", answer.json);
    assert_eq!(bank.available(&account).await, 10_000);
    let stored = bank.ledger.sim(&sim.sim_id).await.unwrap().unwrap();
    assert_eq!(stored.counter.value(), 0, "the SIM's state did not move");
    bank.shutdown().await;
}

/// One account per case so each decline is checked against balances it could have moved.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_decline_code_is_reached_and_moves_no_money() {
    let mut bank = Bank::start().await;
    let gateway = bank.gateway();

    // 30: malformed body (HTTP 400 problem).
    let answer = bank.post(&gateway, b"{\"payer_packet\": 1}".to_vec(), Some("x")).await.unwrap();
    assert_eq!(answer.status, 400);
    assert_eq!(answer.content_type.as_deref(), Some("application/problem+json"));
    assert_eq!(answer.json["response_code"], "30");

    let account = bank.create_account(&AccountSpec::debit("4000120000000010", "2468", 10_000)).await;
    let mut sim = bank.new_sim("8949012300000000010", &[&account]).await;

    // 63 (HTTP 401): a JWS over other bytes.
    let packet = sim.pay(&account, "D-1", 100, "2468");
    let (body, _) = bank.merchant.request(&packet, "D-1", 100, 978);
    let other_jws = bank.merchant.sign(b"something else");
    let answer = bank.post(&gateway, body.clone(), Some(&other_jws)).await.unwrap();
    assert_eq!(answer.status, 401);
    assert_eq!(answer.json["response_code"], "63");
    // No JWS at all.
    let answer = bank.post(&gateway, body, None).await.unwrap();
    assert_eq!(answer.status, 401);

    // 12: the body's amount differs from the packet's (HTTP 400).
    let (body, jws) = bank.merchant.request(&packet, "D-1", 999, 978);
    let answer = bank.post(&gateway, body, Some(&jws)).await.unwrap();
    assert_eq!(answer.status, 400);
    assert_eq!(answer.json["response_code"], "12");

    // 30 for a packet whose type byte is wrong.
    let mut bad_type = packet.clone();
    bad_type[0] = 0x02;
    let answer = bank.authorize(&bad_type, "D-1", 100).await;
    assert_eq!(answer.status, 400);
    assert_eq!(answer.json["response_code"], "30");

    // The genuine packet still goes through after all that: nothing moved the SIM.
    let answer = bank.authorize(&packet, "D-1", 100).await;
    assert_eq!(answer.code(), "00");
    sim.read_answer(&answer);
    let balance = bank.available(&account).await;

    // 14: a SIM the bank never registered (personalised with a record of another bank's key).
    let mut stranger = bank.unregistered_sim("8949012399999999999", &account);
    let packet = stranger.pay(&account, "D-2", 100, "2468");
    assert_eq!(bank.authorize(&packet, "D-2", 100).await.code(), "14");

    // 62: a blocked SIM.
    bank.ledger.set_sim_status(&sim.sim_id, mps_authz::ledger::SimStatus::Blocked).await.unwrap();
    let packet = sim.pay(&account, "D-3", 100, "2468");
    assert_eq!(bank.authorize(&packet, "D-3", 100).await.code(), "62");
    bank.ledger.set_sim_status(&sim.sim_id, mps_authz::ledger::SimStatus::Active).await.unwrap();

    // 63: counter out of step. A packet claiming a session further ahead is refused at step 6,
    // before any HSM work (no MAC failure is counted); the SIM's state does not move.
    let mut ahead = packet.clone();
    ahead[19] = ahead[19].wrapping_add(5);
    let mac_failures = bank.metrics().mac_failures.get();
    assert_eq!(bank.authorize(&ahead, "D-3", 100).await.code(), "63");
    assert_eq!(bank.metrics().mac_failures.get(), mac_failures, "refused by the counter check, not the MAC");
    // The pending packet D-3 is then processed normally.
    let answer = bank.authorize(&packet, "D-3", 100).await;
    assert_eq!(answer.code(), "00");
    sim.read_answer(&answer);
    let balance_after = bank.available(&account).await;
    assert_eq!(balance_after, balance - 100);
    let balance = balance_after;

    // 55 then 75: wrong passwords; the third in a row locks payments.
    for (try_no, expected) in [(1, "55"), (2, "55"), (3, "75")] {
        let order = format!("PW-{try_no}");
        let packet = sim.pay(&account, &order, 100, "9999");
        let answer = bank.authorize(&packet, &order, 100).await;
        assert_eq!(answer.code(), expected, "wrong password try {try_no}");
        let outcome = sim.read_answer(&answer);
        assert_eq!(outcome.answer.balance, 0, "a wrong password must not reveal the balance");
    }
    // Locked: even the right password gets 75.
    let packet = sim.pay(&account, "PW-4", 100, "2468");
    let answer = bank.authorize(&packet, "PW-4", 100).await;
    assert_eq!(answer.code(), "75");
    sim.read_answer(&answer);
    bank.ledger.reset_password_tries(&account).await.unwrap();
    assert_eq!(bank.available(&account).await, balance);

    // 13: over the per-transaction limit (100 000).
    let packet = sim.pay(&account, "L-1", 100_001, "2468");
    let answer = bank.authorize(&packet, "L-1", 100_001).await;
    assert_eq!(answer.code(), "13");
    sim.read_answer(&answer);

    // 51: insufficient funds.
    let packet = sim.pay(&account, "F-1", balance as u64 + 1, "2468");
    let answer = bank.authorize(&packet, "F-1", balance as u64 + 1).await;
    assert_eq!(answer.code(), "51");
    let outcome = sim.read_answer(&answer);
    assert_eq!(outcome.answer.balance, balance, "a verified decline shows the balance");

    // 94: the same merchant order again after it was approved ("D-1").
    let packet = sim.pay(&account, "D-1", 100, "2468");
    let answer = bank.authorize(&packet, "D-1", 100).await;
    assert_eq!(answer.code(), "94");
    sim.read_answer(&answer);
    assert_eq!(bank.available(&account).await, balance);

    // 61: the daily limit; a small account with daily limit 300.
    let mut limited = AccountSpec::debit("4000120000000011", "1357", 10_000);
    limited.daily_limit = 300;
    let limited = bank.create_account(&limited).await;
    // 57: an account not bound to this SIM, and an account in another currency.
    let mut usd = AccountSpec::debit("4000120000000012", "1357", 10_000);
    usd.currency = Currency::USD;
    let usd = bank.create_account(&usd).await;
    let unbound = bank.create_account(&AccountSpec::debit("4000120000000013", "1357", 10_000)).await;
    // 62: a closed account.
    let closed = bank.create_account(&AccountSpec::debit("4000120000000014", "1357", 10_000)).await;
    let mut sim2 = bank.new_sim("8949012300000000011", &[&limited, &usd, &closed]).await;
    sim2.profile.add_account(unbound.clone(), mps_protocol::Iin::new(mps_tests::IIN).unwrap(), None).unwrap();
    bank.ledger.set_account_status(&closed, mps_authz::ledger::AccountStatus::Closed).await.unwrap();

    let packet = sim2.pay(&limited, "DL-1", 200, "1357");
    let answer = bank.authorize(&packet, "DL-1", 200).await;
    assert_eq!(answer.code(), "00");
    sim2.read_answer(&answer);
    let packet = sim2.pay(&limited, "DL-2", 200, "1357");
    let answer = bank.authorize(&packet, "DL-2", 200).await;
    assert_eq!(answer.code(), "61");
    sim2.read_answer(&answer);
    assert_eq!(bank.available(&limited).await, 9_800);

    let packet = sim2.pay(&unbound, "U-1", 100, "1357");
    let answer = bank.authorize(&packet, "U-1", 100).await;
    assert_eq!(answer.code(), "57");
    sim2.read_answer(&answer);
    assert_eq!(bank.available(&unbound).await, 10_000);

    let packet = sim2.pay(&usd, "C-1", 100, "1357");
    let answer = bank.authorize(&packet, "C-1", 100).await;
    assert_eq!(answer.code(), "57", "EUR payment from a USD account");
    sim2.read_answer(&answer);
    assert_eq!(bank.available(&usd).await, 10_000);

    let packet = sim2.pay(&closed, "X-1", 100, "1357");
    let answer = bank.authorize(&packet, "X-1", 100).await;
    assert_eq!(answer.code(), "62");
    sim2.read_answer(&answer);
    assert_eq!(bank.available(&closed).await, 10_000);

    assert!(bank.ledger.postings_sum_by_currency().await.unwrap().iter().all(|(_, sum)| *sum == 0));
    bank.shutdown().await;
}
