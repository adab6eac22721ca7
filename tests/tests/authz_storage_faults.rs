//! The ledger's file system fills up under a running authz: payments get 503 (code 91),
//! /readyz says not ready, and nothing is approved or booked; when space returns, service
//! resumes by itself, the same packet is approved once, and the ledger's audit is clean. The
//! ledger lives on a small tmpfs the test mounts, so it runs as root (as CI does); elsewhere it
//! says so and does nothing. (A read-only remount under the open ledger is refused by Linux
//! while files are open for writing, so the read-only case is not staged here.)
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use mps_tests::{AccountSpec, Answer, Bank};

/// A tmpfs mounted on a temporary directory, unmounted on drop.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    /// None when this process may not mount (not root).
    fn mount(size: &str) -> Option<Self> {
        if !is_root() {
            eprintln!("SKIPPED: mounting a tmpfs needs root (CI runs the tests as root)");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let options = format!("size={size},mode=0700");
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &options, "tmpfs", dir.path().to_str().unwrap()])
            .status()
            .is_ok_and(|status| status.success());
        if !mounted {
            eprintln!("SKIPPED: root, but this sandbox refuses to mount a tmpfs (no CAP_SYS_ADMIN?)");
            return None;
        }
        Some(Self { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.dir.path()).status();
    }
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().is_ok_and(|out| String::from_utf8_lossy(&out.stdout).trim() == "0")
}

/// Fills the file system with a ballast file until it is full.
fn fill(dir: &Path) -> PathBuf {
    let path = dir.join("ballast");
    let mut file = std::fs::File::create(&path).unwrap();
    let block = vec![0u8; 4096];
    while file.write_all(&block).is_ok() {}
    let _ = file.sync_all();
    path
}

async fn pay(bank: &Bank, packet: &[u8], order: &str, amount: u64) -> Answer {
    bank.authorize(packet, order, amount).await
}

async fn readyz(bank: &Bank) -> u16 {
    reqwest::get(format!("{}/readyz", bank.admin_url)).await.unwrap().status().as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_disk_approves_nothing_and_service_resumes_when_space_returns() {
    let Some(fs) = Tmpfs::mount("4m") else { return };
    let db = fs.path().join("authz.db");
    let mut bank = Bank::builder().with_config(move |c| c.ledger.path = db).start().await;
    let account = bank.create_account(&AccountSpec::debit("4000120000000071", "2468", 10_000)).await;
    let mut sim = bank.new_sim("8949012300000000071", &[&account]).await;
    let packet = sim.pay(&account, "F-1", 100, "2468");
    let first = pay(&bank, &packet, "F-1", 100).await;
    assert_eq!(first.code(), "00");
    sim.read_answer(&first);

    let ballast = fill(fs.path());
    let packet = sim.pay(&account, "F-2", 200, "2468");
    for _ in 0..3 {
        let refused = pay(&bank, &packet, "F-2", 200).await;
        assert_eq!(refused.status, 503, "{:?}", refused.json);
        assert_eq!(refused.code(), "91");
    }
    assert_eq!(readyz(&bank).await, 503, "not ready while the ledger cannot write");
    assert_eq!(bank.available(&account).await, 9_900, "nothing booked on a full disk");

    std::fs::remove_file(ballast).unwrap();
    let mut approved = None;
    for _ in 0..50 {
        let answer = pay(&bank, &packet, "F-2", 200).await;
        if answer.status == 200 {
            approved = Some(answer);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let approved = approved.expect("service resumed once space returned");
    assert_eq!(approved.code(), "00");
    sim.read_answer(&approved);
    assert_eq!(bank.available(&account).await, 9_700, "booked once");
    assert_eq!(readyz(&bank).await, 200);
    bank.ledger.audit().await.unwrap();
    bank.shutdown().await;
}
