//! The gateway-facing listener holds against hostile peers: connections that complete the TLS
//! handshake and send nothing are closed; a body that stalls fails its request instead of
//! holding the connection; a flood of sockets that never handshake is refused at once by the
//! handshake budget, and the idle connections and the flood together never keep the honest
//! gateway's connection from being served.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::time::Duration;

use mps_tests::{AccountSpec, Bank};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

type Tls = tokio_rustls::client::TlsStream<TcpStream>;

/// A connection with the gateway's certificate that must succeed, nothing sent.
async fn authenticated(bank: &Bank, alpn: &[u8]) -> Tls {
    bank.tls_connect(Some(alpn)).await.unwrap()
}

/// Reads until the server closes; Err when it has not within `within`.
async fn closed_within(stream: &mut Tls, within: Duration) -> Result<Vec<u8>, ()> {
    let mut buffer = Vec::new();
    match tokio::time::timeout(within, stream.read_to_end(&mut buffer)).await {
        Ok(_) => Ok(buffer),
        Err(_) => Err(()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_connection_that_sends_nothing_after_its_handshake_is_closed() {
    let mut bank = Bank::builder().with_config(|c| c.server.header_read_timeout_ms = 400).start().await;
    for alpn in [&b"http/1.1"[..], b"h2"] {
        let mut idle = authenticated(&bank, alpn).await;
        closed_within(&mut idle, Duration::from_secs(5))
            .await
            .unwrap_or_else(|()| panic!("an idle {} connection was kept open", String::from_utf8_lossy(alpn)));
    }
    assert_eq!(bank.metric("mps_authz_listener_idle_closed_total").await, 2.0);
    bank.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_body_that_stalls_fails_its_request_and_frees_the_connection() {
    let mut bank = Bank::builder().with_config(|c| c.server.body_read_timeout_ms = 400).start().await;
    let mut stalled = authenticated(&bank, b"http/1.1").await;
    stalled
        .write_all(
            b"POST /v1/authorizations HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
              Content-Length: 400\r\n\r\n{\"pay",
        )
        .await
        .unwrap();
    stalled.flush().await.unwrap();
    let answer = closed_within(&mut stalled, Duration::from_secs(5)).await.expect("a stalled body held its connection");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 4"), "a stalled body is refused: {answer}");
    bank.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn idle_connections_and_a_handshake_flood_do_not_keep_the_gateway_from_being_served() {
    const HANDSHAKES: usize = 8;
    let mut bank = Bank::builder()
        .with_config(|c| {
            c.server.handshakes_max = HANDSHAKES;
            c.server.handshake_timeout_ms = 30_000;
            c.server.connections_max = 16;
            c.server.header_read_timeout_ms = 500;
        })
        .start()
        .await;
    let account = bank.create_account(&AccountSpec::debit("4000120000000051", "2468", 10_000)).await;
    let mut sim = bank.new_sim("8949012300000000051", &[&account]).await;
    // The gateway's connection is up and has served a payment.
    let gateway = bank.gateway();
    let packet = sim.pay(&account, "H-1", 100, "2468");
    let (body, jws) = bank.merchant.request(&packet, "H-1", 100, 978);
    let first = bank.post(&gateway, body, Some(&jws)).await.unwrap();
    assert_eq!(first.code(), "00");
    sim.read_answer(&first);

    // Sockets that never start a handshake: the budget takes HANDSHAKES of them, the rest are
    // closed at once.
    let address = bank.server.as_ref().unwrap().address;
    let mut flood = Vec::new();
    for _ in 0..HANDSHAKES * 4 {
        flood.push(TcpStream::connect(address).await.unwrap());
    }
    // Authenticated connections that send nothing fill most of connections_max.
    let mut idle = Vec::new();
    for _ in 0..12 {
        if let Ok(Ok(stream)) = tokio::time::timeout(Duration::from_millis(500), bank.tls_connect(None)).await {
            idle.push(stream);
        }
    }
    // The gateway's existing connection is served meanwhile.
    let packet = sim.pay(&account, "H-2", 100, "2468");
    let (body, jws) = bank.merchant.request(&packet, "H-2", 100, 978);
    let second = bank.post(&gateway, body, Some(&jws)).await.unwrap();
    assert_eq!(second.code(), "00", "{:?}", second.json);
    let mut refused_at_once = 0;
    for mut socket in flood {
        let mut byte = [0u8; 1];
        if let Ok(Ok(0)) = tokio::time::timeout(Duration::from_millis(50), socket.read(&mut byte)).await {
            refused_at_once += 1;
        }
    }
    assert!(refused_at_once >= HANDSHAKES * 2, "only {refused_at_once} flood sockets were closed at once");
    let refused = bank.metric("mps_authz_listener_handshakes_refused_total").await;
    assert!(refused >= (HANDSHAKES * 2) as f64, "{refused} sockets refused by the handshake budget");
    drop(idle);
    bank.shutdown().await;
}

/// The listener counts sockets per source address, and forgets an address with its last socket:
/// many sources that come and go leave nothing behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_table_of_source_addresses_forgets_each_with_its_last_socket() {
    const SOURCES: u8 = 40;
    let mut bank = Bank::builder()
        .with_config(|c| {
            c.server.handshakes_max = 2 * usize::from(SOURCES);
            c.server.handshake_timeout_ms = 30_000;
        })
        .start()
        .await;
    let address = bank.server.as_ref().unwrap().address;
    // Two sockets from each of 40 loopback addresses, never a handshake.
    let mut sockets = Vec::new();
    for source in 0..SOURCES {
        for _ in 0..2 {
            let socket = tokio::net::TcpSocket::new_v4().unwrap();
            socket.bind(std::net::SocketAddr::from(([127, 0, 1, source + 1], 0))).unwrap();
            sockets.push(socket.connect(address).await.unwrap());
        }
    }
    let mut tracked = 0.0;
    for _ in 0..100 {
        tracked = bank.metric("mps_authz_listener_sources").await;
        if tracked == f64::from(SOURCES) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(tracked, f64::from(SOURCES), "every source tracked while its sockets are open");
    drop(sockets);
    for _ in 0..100 {
        tracked = bank.metric("mps_authz_listener_sources").await;
        if tracked == 0.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(tracked, 0.0, "every source forgotten with its last socket");
    bank.shutdown().await;
}
