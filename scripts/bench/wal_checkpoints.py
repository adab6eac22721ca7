#!/usr/bin/env python3
"""Commit latency of the ledger's SQLite schema as it grows, with WAL checkpoints inside the
COMMIT (SQLite's default, mode `auto`) or off the commit path as authz does them (mode `bg`: a
thread runs PASSIVE checkpoints every 100 ms and asks the writer for a RESTART between two
commits once the WAL holds 16 MiB; docs/LEDGER.md, "Checkpoints").

Usage: scripts/bench/wal_checkpoints.py LEDGER.db auto|bg PAYMENTS [OUT_DIR]
LEDGER.db is any authz ledger (read only, for its schema: e.g. build/demo/bank-A/authz.db after
scripts/demo). Each commit books two payments of 1000 accounts and SIMs the way a session commit
does (transaction row, daily-total read, balances, journal entry, two postings, SIM state, stored
answer), with synchronous=FULL. Every 10,000 commits it prints the database size and the commit
latency percentiles. Run both modes at the same time to compare them under the same load.
"""
import sqlite3, os, sys, time, threading, random
if len(sys.argv) < 4 or sys.argv[1] in ("-h", "--help") or sys.argv[2] not in ("auto", "bg"):
    print(__doc__)
    sys.exit(0 if len(sys.argv) > 1 and sys.argv[1] in ("-h", "--help") else 2)
mode = sys.argv[2]; total = int(sys.argv[3]); out = sys.argv[4] if len(sys.argv) > 4 else "/tmp"
cache = 0
path = os.path.join(out, f"wal-bench-{mode}.db")
for s in ("", "-wal", "-shm"):
    try: os.remove(path + s)
    except FileNotFoundError: pass
src = sqlite3.connect(f"file:{sys.argv[1]}?mode=ro", uri=True)
schema = [s for (s,) in src.execute("select sql from sqlite_master where sql is not null and name not like 'sqlite_%'")]
c = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
c.execute("PRAGMA journal_mode=WAL"); c.execute("PRAGMA synchronous=FULL")
if cache: c.execute(f"PRAGMA cache_size=-{cache*1024}")
for s in schema: c.execute(s)
N = 1000
c.execute("BEGIN")
c.execute("INSERT INTO internal_accounts (id, kind, acquirer_iin, currency, created_at) VALUES (1,'funding','',978,'x'),(2,'settlement_payable','500001',978,'x')")
for i in range(N):
    acct = f"4000{i:012d}"; sim = f"8949{i:015d}"
    c.execute("INSERT INTO accounts VALUES (?,?,?,?,?,?,?,?,0,0,?,?,?)", (acct, "Holder", "debit", 978, 0, 10**12, "open", os.urandom(32), 10**9, 10**12, "x"))
    c.execute("INSERT INTO sims (sim_id, iin, status, counter, wrapped_chain_key, next_rsn, created_at) VALUES (?,?,?,?,?,?,?)", (sim, "400012", "active", 0, os.urandom(40), os.urandom(8), "x"))
    c.execute("INSERT INTO sim_accounts VALUES (?,?)", (sim, acct))
c.execute("COMMIT")
stop = False
ck_times = []
restarts = [0]
want = [False]
def checkpointer():
    k = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    k.execute("PRAGMA synchronous=FULL"); k.execute("PRAGMA busy_timeout=5000")
    while not stop:
        time.sleep(0.1)
        t = time.perf_counter(); r = k.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall(); ck_times.append(time.perf_counter() - t)
        if r[0][1] >= 4096:
            want[0] = True
if mode == "bg":
    c.execute("PRAGMA wal_autocheckpoint=16384"); c.execute("PRAGMA journal_size_limit=16777216")
    threading.Thread(target=checkpointer, daemon=True).start()
counters = [0]*N
lat = []; n = 0; t0 = time.perf_counter()
while n < total:
    t = time.perf_counter()
    c.execute("BEGIN IMMEDIATE")
    for _ in range(2):
        i = random.randrange(N); counters[i] += 1; n += 1
        acct = f"4000{i:012d}"; sim = f"8949{i:015d}"; txn = os.urandom(16)
        c.execute("INSERT INTO transactions (txn_id, sim_id, counter, account, merchant_id, order_no, acquirer_iin, merchant_account, amount, currency, response_code, auth_code, business_day, created_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                  (txn, sim, counters[i], acct, "COFFEE-SHOP-01", f"LT-{n}-{random.randrange(10**9)}", "500001", "DE89370400440532013000", 100, 978, "00", "A1B2C3", "2026-12-01", "2026-12-01T05:00:00Z"))
        c.execute("SELECT CAST(COALESCE(SUM(amount),0) AS BIGINT) FROM transactions WHERE account=? AND business_day=? AND response_code='00' AND reversal_id IS NULL", (acct, "2026-12-01")).fetchone()
        c.execute("UPDATE accounts SET balance = balance - 100 WHERE account=?", (acct,))
        c.execute("UPDATE internal_accounts SET balance = balance + 100 WHERE id=2")
        e = c.execute("INSERT INTO journal_entries (kind, txn_id, created_at) VALUES ('authorization', ?, 'x') RETURNING id", (txn,)).fetchone()[0]
        c.execute("INSERT INTO postings (entry_id, account, amount, currency) VALUES (?,?,?,978)", (e, acct, -100))
        c.execute("INSERT INTO postings (entry_id, internal_account_id, amount, currency) VALUES (?,2,100,978)", (e,))
        c.execute("UPDATE sims SET counter=?, wrapped_chain_key=?, next_rsn=? WHERE sim_id=?", (counters[i], os.urandom(40), os.urandom(8), sim))
        c.execute("INSERT OR REPLACE INTO sim_answers VALUES (?,?,?,?,?,?)", (sim, counters[i], txn, os.urandom(113), os.urandom(300), "e"*200))
    c.execute("COMMIT")
    lat.append(time.perf_counter() - t)
    if want[0]:
        want[0] = False; c.execute("PRAGMA wal_checkpoint(RESTART)").fetchall(); restarts[0] += 1
    if len(lat) == 10000:
        lat.sort(); w = os.path.getsize(path + "-wal") // 1024
        ck = sorted(ck_times); ck_times.clear()
        print(f"{mode} cache={cache} n={n} db={os.path.getsize(path)//2**20}MiB wal={w}KiB p50={lat[5000]*1000:.2f} p99={lat[9900]*1000:.2f} p999={lat[9990]*1000:.2f} max={lat[-1]*1000:.1f} ms" + (f" ckpt n={len(ck)} p50={ck[len(ck)//2]*1000:.1f} max={ck[-1]*1000:.1f} restarts={restarts[0]}" if ck else ""), flush=True)
        lat.clear()
stop = True
