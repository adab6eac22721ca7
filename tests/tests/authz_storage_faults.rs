//! Storage faults under a running authz, each on a file system the test mounts (so they run as
//! root, as CI does; elsewhere they say SKIPPED and do nothing):
//!
//! - The ledger's file system fills up (a small tmpfs): payments get 503 (code 91), /readyz says
//!   not ready, and nothing is approved or booked; when space returns, service resumes by
//!   itself, the same packet is approved once, and the ledger's audit is clean.
//! - The ledger's file system turns read-only under the `authz` process (ext4 on a loop device,
//!   mounted `errors=remount-ro`, and a file-system error raised through the kernel's
//!   `trigger_fs_error`, which is what a disk error does in production; Linux refuses a plain
//!   read-only remount while files are open for writing): 503/91 and not ready, nothing
//!   booked; the operator's repair (stop authz, unmount, e2fsck, mount, start) loses no booking
//!   made before the fault, and the same packet is then approved once with a clean audit.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::ffi::OsString;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use mps_authz::ledger::Ledger;
use mps_hsm::testing::{TestToken, USER_PIN};
use mps_tests::process::{Service, build_binary};
use mps_tests::{AccountSpec, Answer, Bank, free_port};

/// The variable that carries the HSM PIN to the `authz` process (its config's `hsm.pin_env`).
const PIN_ENV: &str = "MPS_HSM_PIN";

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

/// An ext4 file system in a 64 MiB image on a loop device, mounted with `errors=remount-ro`
/// on a temporary directory; unmounted and detached on drop.
struct LoopExt4 {
    dir: tempfile::TempDir,
    device: String,
}

impl LoopExt4 {
    /// None when this process may not make one (not root, no loop device, no mount).
    fn mount() -> Option<Self> {
        if !is_root() {
            eprintln!("SKIPPED: a loop device and a mount need root (CI runs the tests as root)");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let image = dir.path().join("ledger.img");
        std::fs::File::create(&image).unwrap().set_len(64 << 20).unwrap();
        if !run("mkfs.ext4", &["-q", "-F", image.to_str().unwrap()]) {
            eprintln!("SKIPPED: mkfs.ext4 failed (is e2fsprogs installed?)");
            return None;
        }
        let attached = Command::new("losetup").args(["-f", "--show"]).arg(&image).output().ok();
        let device = match attached {
            Some(out) if out.status.success() => String::from_utf8_lossy(&out.stdout).trim().to_owned(),
            _ => {
                eprintln!("SKIPPED: root, but no loop device could be attached (losetup -f failed)");
                return None;
            }
        };
        let fs = Self { dir, device };
        std::fs::create_dir(fs.path()).unwrap();
        if !fs.mount_device() {
            eprintln!("SKIPPED: root, but this sandbox refuses to mount {}", fs.device);
            return None;
        }
        Some(fs)
    }

    fn mount_device(&self) -> bool {
        run("mount", &["-o", "errors=remount-ro", &self.device, self.path().to_str().unwrap()])
    }

    /// The mount point.
    fn path(&self) -> PathBuf {
        self.dir.path().join("mnt")
    }

    /// Raises a file-system error: ext4 aborts its journal and turns the mount read-only.
    fn fail(&self) {
        let name = self.device.trim_start_matches("/dev/");
        std::fs::write(format!("/sys/fs/ext4/{name}/trigger_fs_error"), "ledger test\n").unwrap();
        let probe = std::fs::write(self.path().join("probe"), b"x");
        assert!(probe.is_err(), "the file system is read-only after the error");
    }

    /// The operator's repair: unmount, e2fsck, mount again (read-write).
    fn repair(&self) {
        assert!(run("umount", &[self.path().to_str().unwrap()]), "nothing holds the ledger's file system");
        // e2fsck exits 1 when it corrected errors (the recorded one, at least).
        let checked = Command::new("e2fsck").args(["-f", "-y", &self.device]).output().unwrap();
        assert!(matches!(checked.status.code(), Some(0 | 1)), "e2fsck: {checked:?}");
        assert!(self.mount_device(), "the repaired file system mounts again");
    }
}

impl Drop for LoopExt4 {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.path()).status();
        let _ = Command::new("losetup").args(["-d", &self.device]).status();
    }
}

fn run(program: &str, args: &[&str]) -> bool {
    Command::new(program).args(args).output().is_ok_and(|out| out.status.success())
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
    // SQLite may still write a few groups into WAL space it has already (the checkpoint thread
    // copies the WAL into the database and the writer starts it over); it fails, and nothing
    // is approved, as soon as a file has to grow.
    let mut booked = 100;
    let (packet, order) = 'refused: {
        for n in 2..40 {
            let order = format!("F-{n}");
            let packet = sim.pay(&account, &order, 200, "2468");
            let answer = pay(&bank, &packet, &order, 200).await;
            if answer.status == 503 {
                break 'refused (packet, order);
            }
            assert_eq!(answer.code(), "00", "{:?}", answer.json);
            sim.read_answer(&answer);
            booked += 200;
        }
        panic!("the ledger kept approving on a full disk");
    };
    for _ in 0..3 {
        let refused = pay(&bank, &packet, &order, 200).await;
        assert_eq!(refused.status, 503, "{:?}", refused.json);
        assert_eq!(refused.code(), "91");
    }
    assert_eq!(readyz(&bank).await, 503, "not ready while the ledger cannot write");
    assert_eq!(bank.available(&account).await, 10_000 - booked, "nothing booked on a full disk");

    std::fs::remove_file(ballast).unwrap();
    let mut approved = None;
    for _ in 0..50 {
        let answer = pay(&bank, &packet, &order, 200).await;
        if answer.status == 200 {
            approved = Some(answer);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let approved = approved.expect("service resumed once space returned");
    assert_eq!(approved.code(), "00");
    sim.read_answer(&approved);
    assert_eq!(bank.available(&account).await, 10_000 - booked - 200, "booked once");
    assert_eq!(readyz(&bank).await, 200);
    bank.ledger.audit().await.unwrap();
    bank.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_read_only_ledger_approves_nothing_and_the_repair_loses_no_booking() {
    let Some(fs) = LoopExt4::mount() else { return };
    let program = build_binary("authz");
    let db = fs.path().join("authz.db");

    // Accounts and the SIM through the in-process server's parts; it stops, and its ledger is
    // closed, before the `authz` process opens the same file.
    let (listen, admin) = (free_port(), free_port());
    let mut files = Bank::builder().files().await;
    files.config.ledger.path = db.clone();
    let mut text: toml::Table = files.binary_config_text(listen, admin, PIN_ENV).parse().unwrap();
    text.get_mut("ledger")
        .and_then(toml::Value::as_table_mut)
        .unwrap()
        .insert("path".into(), db.to_str().unwrap().into());
    let config = files.dir.path().join("authz-process.toml");
    std::fs::write(&config, text.to_string()).unwrap();
    let mut bank = Bank::start_from(files).await;
    let account = bank.create_account(&AccountSpec::debit("4000120000000072", "2468", 10_000)).await;
    let mut sim = bank.new_sim("8949012300000000072", &[&account]).await;
    bank.shutdown().await;
    let elsewhere = bank.dir.path().join("unused.db");
    let in_process = std::mem::replace(&mut bank.ledger, Ledger::open(&elsewhere, Default::default()).unwrap());
    in_process.close().await;
    drop(in_process);
    bank.url = format!("https://{listen}");
    let token = TestToken::shared().unwrap();
    let env: Vec<(OsString, OsString)> =
        vec![(PIN_ENV.into(), USER_PIN.into()), ("SOFTHSM2_CONF".into(), token.softhsm_conf.clone().into())];
    let mut authz = Service::start_with_env("authz", program, config, bank.dir.path(), env);
    authz.wait_ready(admin, "authz").await;
    let admin_url = format!("http://{admin}");
    let readyz = || async { reqwest::get(format!("{admin_url}/readyz")).await.unwrap().status().as_u16() };

    let first = pay(&bank, &sim.pay(&account, "R-1", 100, "2468"), "R-1", 100).await;
    assert_eq!(first.code(), "00", "{:?}", first.json);
    sim.read_answer(&first);

    fs.fail();
    let packet = sim.pay(&account, "R-2", 200, "2468");
    for _ in 0..3 {
        let refused = pay(&bank, &packet, "R-2", 200).await;
        assert_eq!(refused.status, 503, "{:?}", refused.json);
        assert_eq!(refused.code(), "91");
    }
    assert_eq!(readyz().await, 503, "not ready while the ledger cannot write");

    authz.kill();
    fs.repair();
    authz.spawn();
    authz.wait_ready(admin, "authz").await;
    let approved = pay(&bank, &packet, "R-2", 200).await;
    assert_eq!(approved.code(), "00", "the same packet after the repair: {:?}", approved.json);
    sim.read_answer(&approved);
    authz.kill();

    let ledger = Ledger::open(&db, Default::default()).unwrap();
    let balance = ledger.account(&account).await.unwrap().unwrap().available();
    assert_eq!(balance, 10_000 - 100 - 200, "the booking before the fault survived it, the one after is booked once");
    ledger.audit().await.unwrap();
    ledger.close().await;
}
