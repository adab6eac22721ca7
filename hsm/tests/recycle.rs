//! A planned recycle (C_Finalize and C_Initialize to free SoftHSM's session-object memory)
//! drains opened sessions, queues new work instead of failing it, and does not disturb a
//! second pool of the same process for more than one reconnect. Alone in its binary.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Sim, approved, authorize, eventually, token};
use mps_hsm::testing::wrap_known_chain_key;
use mps_hsm::{Hsm, HsmError};
use mps_protocol::Rsn;

/// Everything the process logs, as JSON lines (the supervisor logs from its own thread, so
/// the subscriber is the global one: this binary has one test).
#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Log {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Log {
    /// The fields of the one event whose message is `message`.
    fn event(&self, message: &str) -> serde_json::Map<String, serde_json::Value> {
        let text = String::from_utf8(self.0.lock().unwrap().clone()).unwrap();
        let mut found = text
            .lines()
            .map(|line| serde_json::from_str::<serde_json::Value>(line).unwrap())
            .filter_map(|event| event.get("fields").and_then(|f| f.as_object()).cloned())
            .filter(|fields| fields.get("message").and_then(|m| m.as_str()) == Some(message));
        let event = found.next().unwrap_or_else(|| panic!("no {message:?} in the log:\n{text}"));
        assert!(found.next().is_none(), "{message:?} twice in the log:\n{text}");
        event
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recycle_drains_queues_and_frees() {
    let log = Log::default();
    let writer = log.clone();
    tracing_subscriber::fmt().json().with_writer(move || writer.clone()).init();
    let mut config = token().config.clone();
    config.recycle_drain_ms = 5_000;
    config.reconnect_backoff_min_ms = 50;
    let hsm = Hsm::connect(config.clone()).await.unwrap();
    let sim = Sim::new([0x44; 32], Rsn([3; 8]));
    let wrapped = wrap_known_chain_key(&hsm, sim.chain_key.expose()).await.unwrap();
    for i in 0..5 {
        authorize(&hsm, &wrapped, &sim, [i; 16]).await;
    }
    assert!(hsm.metrics().objects_since_init >= 20);

    // An opened session is sealed while the recycle waits for it; work sent meanwhile runs
    // after the recycle instead of failing.
    let packet = sim.packet(100, [9; 16]);
    let opened = hsm.open_session(&wrapped, packet.fields.counter, sim.rsn, &packet).await.unwrap();
    let began = std::time::Instant::now();
    let recycling = tokio::spawn({
        let hsm = hsm.clone();
        async move { hsm.recycle().await }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let signing = tokio::spawn({
        let hsm = hsm.clone();
        async move { hsm.sign_es256(b"queued during the recycle").await }
    });
    let sealed = hsm.seal_answer(opened.ticket, approved(7)).await;
    assert!(sealed.is_ok(), "{sealed:?}");
    recycling.await.unwrap().unwrap();
    let wall = began.elapsed();
    signing.await.unwrap().unwrap();
    let metrics = hsm.metrics();
    assert_eq!(metrics.recycles_total, 1);
    // The time the HSM took no work: at least the drain's wait for the seal sent 100 ms in,
    // at most the recycle call's wall time.
    let took = metrics.recycle_time_total;
    assert!(took >= Duration::from_millis(100) && took <= wall, "{took:?} of {wall:?}");
    assert_eq!(metrics.members[0].recycle_time_total, took);
    assert_eq!(metrics.reconnects_total, 0);
    // The log line says where the time went, each part within the whole.
    let line = log.event("HSM connection recycled: drained, finalised, logged in again");
    let ms = |field: &str| line.get(field).and_then(|v| v.as_u64()).unwrap_or_else(|| panic!("{field} in {line:?}"));
    assert!(ms("drain_ms") + ms("finalise_ms") + ms("connect_ms") <= ms("elapsed_ms"), "{line:?}");
    assert!(ms("elapsed_ms") <= u64::try_from(wall.as_millis()).unwrap(), "{line:?}");
    let parts = ms("connect_wait_ms") + ms("login_ms") + ms("keys_ms") + ms("attach_ms");
    assert!(parts <= ms("connect_ms"), "{line:?}");
    assert!(ms("attach_first_ms") <= ms("attach_ms"), "{line:?}");
    // The metric counts the HSM out until its first worker served again (each value is rounded
    // down to the millisecond).
    let out = ms("elapsed_ms") + ms("attach_first_ms") - ms("attach_ms");
    let took_ms = u64::try_from(took.as_millis()).unwrap();
    assert!(took_ms.abs_diff(out) <= 2, "{took:?} against {line:?}");
    // Only the workers' fresh key copies (4 per worker) since re-initialisation, plus the
    // signature's none.
    assert!(metrics.objects_since_init <= 8, "{metrics:?}");
    authorize(&hsm, &wrapped, &sim, [10; 16]).await;

    // A session left open past the drain dies with the recycle.
    let mut short = config.clone();
    short.recycle_drain_ms = 100;
    let quick = Hsm::connect(short).await.unwrap();
    let opened = quick.open_session(&wrapped, packet.fields.counter, sim.rsn, &packet).await.unwrap();
    quick.recycle().await.unwrap();
    let err = quick.seal_answer(opened.ticket, approved(7)).await.unwrap_err();
    assert!(matches!(err, HsmError::Unavailable), "{err:?}");

    // The first pool lost its sessions to that recycle: it reconnects once, without
    // finalising the module again (which would take the second pool down in turn).
    let first = hsm.sign_es256(b"x").await;
    assert!(matches!(first, Err(HsmError::Unavailable)) || first.is_ok(), "{first:?}");
    assert!(eventually(Duration::from_secs(20), async || hsm.is_ready()).await);
    authorize(&hsm, &wrapped, &sim, [11; 16]).await;
    quick.sign_es256(b"still up").await.unwrap();
    assert_eq!(quick.metrics().reconnects_total, 0, "the second pool was not disturbed");
    assert!(quick.is_ready());
}
