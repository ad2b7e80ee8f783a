//! docs/testing.md row 6 against the real database and the real `verify`: tamper with a copy of a
//! store built by the CLI (the append-only triggers dropped, as an attacker with the file
//! would), and check that `confstore verify` on the database, and `confstore verify
//! --export` on an export of it, both fail and both name the mutated seq as the first bad
//! one. Clean random stores must verify (no false positives).
//!
//! Mutations: flip one byte of one stored field (body, prev_hash, hash, key_id, sig) of a
//! random event; renumber an event beyond the end; delete an event (not the last: a tail
//! truncation is invisible to a hash chain, see the tests at the end); swap the contents of
//! two adjacent events; append a copy of the last event, random bytes, or a well-formed event
//! signed with a foreign key; change an event's time and recompute its hash (and, sometimes,
//! re-link every later event), so only the signature can tell.
//!
//! The tests at the end check what the database itself records (its last verified head):
//! `verify` must name a deleted last event, and a writer must not build on an altered one.
//!
//! `TAMPER_MUTATIONS` (default 200), `TAMPER_CLEAN` (default 20), `TAMPER_SEED` and
//! `TAMPER_CLEAN_SEED` set the run. A failing case keeps its tampered copy under the kept
//! scratch directory.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::{Rng, Scratch, Store, copy_db, env_count, seed, str_of, u64_of};
use confstore_core::{EventBody, EventKind, Hash32, KeyId, SigningKey, event_hash, state};
use rusqlite::{Connection, params};
use serde_json::{Value, json};

/// One stored row of `events`.
#[derive(Clone, Debug)]
struct Row {
    seq: u64,
    body: Vec<u8>,
    prev_hash: Vec<u8>,
    hash: Vec<u8>,
    key_id: Vec<u8>,
    sig: Vec<u8>,
}

#[derive(Clone, Copy, Debug)]
enum Field {
    Body,
    PrevHash,
    Hash,
    KeyId,
    Sig,
}

impl Field {
    const ALL: [Field; 5] = [Field::Body, Field::PrevHash, Field::Hash, Field::KeyId, Field::Sig];

    fn column(self) -> &'static str {
        match self {
            Field::Body => "body",
            Field::PrevHash => "prev_hash",
            Field::Hash => "hash",
            Field::KeyId => "key_id",
            Field::Sig => "sig",
        }
    }

    fn of(self, row: &Row) -> &[u8] {
        match self {
            Field::Body => &row.body,
            Field::PrevHash => &row.prev_hash,
            Field::Hash => &row.hash,
            Field::KeyId => &row.key_id,
            Field::Sig => &row.sig,
        }
    }
}

#[derive(Clone, Debug)]
enum Mutation {
    /// XOR one byte of one field with a non-zero mask.
    Flip { seq: u64, field: Field, offset: usize, mask: u8 },
    /// Give event `seq` the unused number `to` (beyond the end).
    Renumber { seq: u64, to: u64 },
    /// Delete event `seq` (never the last one).
    Delete { seq: u64 },
    /// Swap body, hash and sig of events `seq` and `seq + 1`.
    SwapAdjacent { seq: u64 },
    /// Append a copy of the last event as event N+1.
    DuplicateLast,
    /// Move events after `seq` up by one and put a copy of event `seq` at `seq + 1`.
    InsertCopy { seq: u64 },
    /// Append random bytes (of valid lengths) as event N+1.
    AppendGarbage { seed: u64 },
    /// Append a well-formed, linked and hashed event N+1 signed by a foreign key; with
    /// `claim_real_key`, under the store's key id.
    AppendForged { seed: u64, claim_real_key: bool, service: String },
    /// Move event `seq`'s time forward and recompute its hash; with `relink`, also re-link
    /// and re-hash every later event. Only the signatures are left wrong.
    Retime { seq: u64, delta_ms: u64, relink: bool },
}

impl Mutation {
    /// The seq `verify` must name, in a log of `n` events.
    fn expected_first_bad_seq(&self, n: u64) -> u64 {
        match self {
            Mutation::Flip { seq, .. }
            | Mutation::Renumber { seq, .. }
            | Mutation::Delete { seq }
            | Mutation::SwapAdjacent { seq }
            | Mutation::Retime { seq, .. } => *seq,
            Mutation::InsertCopy { seq } => seq + 1,
            Mutation::DuplicateLast | Mutation::AppendGarbage { .. } | Mutation::AppendForged { .. } => n + 1,
        }
    }

    /// The kind, for the summary.
    fn kind(&self) -> &'static str {
        match self {
            Mutation::Flip { field, .. } => match field {
                Field::Body => "flip body",
                Field::PrevHash => "flip prev_hash",
                Field::Hash => "flip hash",
                Field::KeyId => "flip key_id",
                Field::Sig => "flip sig",
            },
            Mutation::Renumber { .. } => "renumber",
            Mutation::Delete { .. } => "delete",
            Mutation::SwapAdjacent { .. } => "swap adjacent",
            Mutation::DuplicateLast => "duplicate last",
            Mutation::InsertCopy { .. } => "insert copy",
            Mutation::AppendGarbage { .. } => "append garbage",
            Mutation::AppendForged { .. } => "append forged",
            Mutation::Retime { .. } => "retime and rehash",
        }
    }

    /// Whether the mutation added events after the verified head (so writers must refuse).
    fn appends(&self) -> bool {
        matches!(self, Mutation::DuplicateLast | Mutation::AppendGarbage { .. } | Mutation::AppendForged { .. })
    }

    /// A random mutation of a log of `rows`; the first few cases cover every kind once.
    fn random(case: usize, rng: &mut Rng, rows: &[Row], services: &[String]) -> Self {
        let n = rows.len() as u64;
        // (kind, weight out of 100)
        const KINDS: [(usize, u64); 9] = [(0, 45), (1, 7), (2, 8), (3, 8), (4, 5), (5, 5), (6, 7), (7, 10), (8, 5)];
        let kind = if case < KINDS.len() {
            case
        } else {
            // Walk the cumulative weights.
            let roll = rng.below(100);
            let mut total = 0;
            KINDS
                .iter()
                .find(|(_, w)| {
                    total += w;
                    roll < total
                })
                .map_or(0, |(k, _)| *k)
        };
        let any_seq = |rng: &mut Rng| rng.between(1, n);
        match kind {
            0 => {
                let seq = any_seq(rng);
                let field = *rng.pick(&Field::ALL);
                let len = field.of(&rows[index(seq)]).len();
                let mask = loop {
                    let m = rng.byte();
                    if m != 0 {
                        break m;
                    }
                };
                Mutation::Flip { seq, field, offset: rng.index(len), mask }
            }
            1 => Mutation::Renumber { seq: any_seq(rng), to: n + rng.between(1, 1000) },
            2 => Mutation::Delete { seq: rng.between(1, n - 1) },
            3 => Mutation::SwapAdjacent { seq: rng.between(1, n - 1) },
            4 => Mutation::DuplicateLast,
            5 => Mutation::AppendGarbage { seed: rng.next_u64() },
            6 => Mutation::AppendForged {
                seed: rng.next_u64(),
                claim_real_key: rng.chance(1, 2),
                service: rng.pick(services).clone(),
            },
            8 => Mutation::InsertCopy { seq: rng.between(1, n - 1) },
            _ => Mutation::Retime { seq: any_seq(rng), delta_ms: rng.between(1, 10_000), relink: rng.chance(1, 2) },
        }
    }
}

fn index(seq: u64) -> usize {
    usize::try_from(seq - 1).expect("a seq fits in usize")
}

fn sql(v: u64) -> i64 {
    i64::try_from(v).expect("a seq fits in i64")
}

fn read_rows(db: &Path) -> Vec<Row> {
    let conn = Connection::open(db).expect("opening the base database");
    let mut st =
        conn.prepare("SELECT seq, body, prev_hash, hash, key_id, sig FROM events ORDER BY seq").expect("query");
    st.query_map([], |r| {
        Ok(Row {
            seq: u64::try_from(r.get::<_, i64>(0)?).unwrap_or(0),
            body: r.get(1)?,
            prev_hash: r.get(2)?,
            hash: r.get(3)?,
            key_id: r.get(4)?,
            sig: r.get(5)?,
        })
    })
    .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
    .expect("reading the events")
}

fn arr<const N: usize>(b: &[u8]) -> [u8; N] {
    b.try_into().expect("a stored field of the right length")
}

/// Applies `m` to the database at `db`, as someone holding the file (not the key) could.
fn mutate(db: &Path, m: &Mutation, rows: &[Row]) -> rusqlite::Result<()> {
    let conn = Connection::open(db)?;
    conn.execute_batch("DROP TRIGGER events_no_update; DROP TRIGGER events_no_delete;")?;
    let n = rows.len() as u64;
    let row = |seq: u64| &rows[index(seq)];
    let insert = "INSERT INTO events (seq, body, prev_hash, hash, key_id, sig) VALUES (?1, ?2, ?3, ?4, ?5, ?6)";
    match m {
        Mutation::Flip { seq, field, offset, mask } => {
            let mut bytes = field.of(row(*seq)).to_vec();
            bytes[*offset] ^= mask;
            conn.execute(
                &format!("UPDATE events SET {} = ?1 WHERE seq = ?2", field.column()),
                params![bytes, sql(*seq)],
            )?;
        }
        Mutation::Renumber { seq, to } => {
            conn.execute("UPDATE events SET seq = ?1 WHERE seq = ?2", params![sql(*to), sql(*seq)])?;
        }
        Mutation::Delete { seq } => {
            conn.execute("DELETE FROM events WHERE seq = ?1", params![sql(*seq)])?;
        }
        Mutation::SwapAdjacent { seq } => {
            let (a, b) = (row(*seq), row(*seq + 1));
            for (target, source) in [(a, b), (b, a)] {
                conn.execute(
                    "UPDATE events SET body = ?1, hash = ?2, sig = ?3 WHERE seq = ?4",
                    params![source.body, source.hash, source.sig, sql(target.seq)],
                )?;
            }
        }
        Mutation::DuplicateLast => {
            let last = row(n);
            conn.execute(insert, params![sql(n + 1), last.body, last.prev_hash, last.hash, last.key_id, last.sig])?;
        }
        Mutation::InsertCopy { seq } => {
            // Two steps, because SQLite checks the primary key row by row during an UPDATE.
            let shift = sql(n + 1);
            conn.execute("UPDATE events SET seq = seq + ?1 WHERE seq > ?2", params![shift, sql(*seq)])?;
            conn.execute("UPDATE events SET seq = seq - ?1 + 1 WHERE seq > ?2", params![shift, sql(*seq)])?;
            let copy = row(*seq);
            conn.execute(insert, params![sql(seq + 1), copy.body, copy.prev_hash, copy.hash, copy.key_id, copy.sig])?;
        }
        Mutation::AppendGarbage { seed } => {
            let mut rng = Rng::new(*seed);
            let body_len = usize::try_from(rng.between(1, 300)).expect("small");
            conn.execute(
                insert,
                params![sql(n + 1), rng.bytes(body_len), rng.bytes(32), rng.bytes(32), rng.bytes(8), rng.bytes(64)],
            )?;
        }
        Mutation::AppendForged { seed, claim_real_key, service } => {
            let last = row(n);
            let last_body = EventBody::decode(&last.body).expect("the base store's events decode");
            let body = EventBody {
                epoch: last_body.epoch + 1,
                time_ms: last_body.time_ms + 1,
                changeset_index: 0,
                changeset_len: 1,
                actor: "mallory".into(),
                reason: "forged".into(),
                request_id: "forged".into(),
                kind: EventKind::ValueSet {
                    service: service.clone(),
                    key: "forged".into(),
                    value_json: "true".into(),
                    schema_hash: None,
                },
            };
            let mut key_rng = Rng::new(*seed);
            let foreign = SigningKey::from_seed(&arr(&key_rng.bytes(32)));
            let mut ev = state::seal(n + 1, &Hash32(arr(&last.hash)), &body, &foreign);
            if *claim_real_key {
                ev.key_id = KeyId(arr(&last.key_id));
            }
            conn.execute(
                insert,
                params![
                    sql(ev.seq),
                    ev.body,
                    ev.prev_hash.0.as_slice(),
                    ev.hash.0.as_slice(),
                    ev.key_id.0.as_slice(),
                    ev.sig.as_slice()
                ],
            )?;
        }
        Mutation::Retime { seq, delta_ms, relink } => {
            let mut body = EventBody::decode(&row(*seq).body).expect("the base store's events decode");
            body.time_ms += delta_ms;
            let bytes = body.encode();
            let mut prev = Hash32(arr(&row(*seq).prev_hash));
            let mut hash = event_hash(*seq, &prev, &bytes);
            conn.execute(
                "UPDATE events SET body = ?1, hash = ?2 WHERE seq = ?3",
                params![bytes, hash.0.as_slice(), sql(*seq)],
            )?;
            if *relink {
                for later in &rows[index(*seq) + 1..] {
                    prev = hash;
                    hash = event_hash(later.seq, &prev, &later.body);
                    conn.execute(
                        "UPDATE events SET prev_hash = ?1, hash = ?2 WHERE seq = ?3",
                        params![prev.0.as_slice(), hash.0.as_slice(), sql(later.seq)],
                    )?;
                }
            }
        }
    }
    Ok(())
}

/// A random JSON value of the kinds configuration holds.
fn random_value(rng: &mut Rng, depth: u32) -> Value {
    match rng.below(if depth > 2 { 5 } else { 7 }) {
        0 => json!(rng.between(0, 70_000)),
        1 => json!(-i64::try_from(rng.between(1, 1 << 40)).expect("small")),
        2 => json!(rng.between(0, 1000) as f64 / 8.0),
        3 => json!(rng.chance(1, 2)),
        4 => json!(
            rng.pick(&["", "plain", "naïve café ✓", "with \"quotes\" and \\", "line\nbreak", "日本語"]).to_owned()
        ),
        5 => Value::Array((0..rng.below(4)).map(|_| random_value(rng, depth + 1)).collect()),
        _ => {
            let keys = ["a", "b", "max", "min", "url", "Z"];
            Value::Object(
                (0..rng.below(4)).map(|_| (rng.pick(&keys).to_string(), random_value(rng, depth + 1))).collect(),
            )
        }
    }
}

/// Builds a store through the CLI: a few services, then changesets of 1–4 events (sets and
/// unsets, now and then a new service) until it holds at least `target_events`. Returns the
/// store and its registered services.
fn build_random_store(dir: &Path, rng: &mut Rng, target_events: u64) -> (Store, Vec<String>) {
    const SERVICES: [&str; 8] = ["auth", "billing", "cache", "db", "edge", "feed", "gateway", "hub"];
    const KEYS: [&str; 7] = ["port", "host", "timeout_ms", "flags", "name", "limits.max", "Feature-X"];
    let store = Store::in_dir(dir);
    store.init();
    let mut services: BTreeMap<String, BTreeMap<String, ()>> = BTreeMap::new();
    let first = usize::try_from(rng.between(2, 4)).expect("small");
    let mut lines = vec![json!({"changes": SERVICES[..first].iter()
        .map(|s| json!({"op": "register", "service": s})).collect::<Vec<_>>()})];
    for s in &SERVICES[..first] {
        services.insert((*s).to_owned(), BTreeMap::new());
    }
    let mut events = 1 + first as u64;
    while events < target_events {
        let mut changes = Vec::new();
        let mut touched: Vec<(String, String)> = Vec::new();
        if rng.chance(1, 10)
            && let Some(new) = SERVICES.iter().find(|s| !services.contains_key(**s))
        {
            changes.push(json!({"op": "register", "service": new}));
            services.insert((*new).to_owned(), BTreeMap::new());
        }
        let names: Vec<String> = services.keys().cloned().collect();
        for _ in 0..rng.between(1, 4) {
            let service = rng.pick(&names).clone();
            let keys = &services[&service];
            let unsettable: Vec<String> =
                keys.keys().filter(|k| !touched.contains(&(service.clone(), (*k).clone()))).cloned().collect();
            if rng.chance(1, 4) && !unsettable.is_empty() {
                let key = rng.pick(&unsettable).clone();
                changes.push(json!({"op": "unset", "service": service, "key": key}));
                services.get_mut(&service).expect("registered").remove(&key);
                touched.push((service, key));
            } else {
                let key = (*rng.pick(&KEYS)).to_owned();
                if touched.contains(&(service.clone(), key.clone())) {
                    continue;
                }
                changes.push(json!({"op": "set", "service": service, "key": key, "value": random_value(rng, 0)}));
                services.get_mut(&service).expect("registered").insert(key.clone(), ());
                touched.push((service, key));
            }
        }
        events += changes.len() as u64;
        let reason = rng.pick(&["", "tuning", "incident 42: raise limits", "rollout ✓"]).to_owned();
        lines.push(json!({"changes": changes, "reason": reason, "actor": rng.pick(&["alice", "bob", "ci"])}));
    }
    for (i, r) in store.apply(&lines).iter().enumerate() {
        assert_eq!(r["ok"], json!(true), "changeset {} was refused: {r}\n{}", i + 1, lines[i]);
    }
    (store, services.into_keys().collect())
}

/// What `verify --json` says: (ok, first_bad_seq or events, whole output).
fn verify(store: &Store, export: Option<&Path>) -> Result<Value, String> {
    let mut args = vec!["verify".to_owned(), "--json".to_owned()];
    if let Some(path) = export {
        args.extend(["--export".to_owned(), path.display().to_string()]);
    }
    let run = store.run(&args);
    let v: Value = serde_json::from_str(run.stdout.trim()).map_err(|e| format!("no JSON from verify ({e}):\n{run}"))?;
    if run.status.success() != (v["ok"] == json!(true)) {
        return Err(format!("exit status and \"ok\" disagree:\n{run}"));
    }
    Ok(v)
}

/// Runs one tampered case in `dir`; `Err` explains a miss.
fn run_case(base: &Store, rows: &[Row], m: &Mutation, dir: &Path) -> Result<(), String> {
    let data = dir.join("data");
    copy_db(&base.data_dir, &data);
    mutate(&data.join("config.db"), m, rows).map_err(|e| format!("applying the mutation: {e}"))?;
    let store = base.with_data_dir(&data);
    let expected = m.expected_first_bad_seq(rows.len() as u64);
    let on_db = verify(&store, None)?;
    if on_db["ok"] != json!(false) || on_db["first_bad_seq"] != json!(expected) {
        return Err(format!("verify on the database: expected first_bad_seq {expected}, got {on_db}"));
    }
    let export = dir.join("export.jsonl");
    let run = store.run(&["export", "--out", &export.display().to_string()]);
    if !run.status.success() {
        return Err(format!("export of the tampered store failed:\n{run}"));
    }
    let on_export = verify(&store, Some(&export))?;
    if on_export["ok"] != json!(false) || on_export["first_bad_seq"] != json!(expected) {
        return Err(format!("verify --export: expected first_bad_seq {expected}, got {on_export} (database: {on_db})"));
    }
    if m.appends() {
        let run = store.run(&["set", "cache", "after_tamper", "1"]);
        if run.status.success() || !run.stderr.contains("does not verify") {
            return Err(format!("a store with a tampered tail must refuse writes:\n{run}"));
        }
    }
    Ok(())
}

fn workers() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get().min(4))
}

#[test]
fn every_mutation_is_detected_at_its_seq_by_verify_and_verify_export() {
    let count = env_count("TAMPER_MUTATIONS", 200);
    let seed = seed("TAMPER_SEED");
    let mut rng = Rng::new(seed);
    let mut scratch = Scratch::new("tamper");
    let (base, services) = build_random_store(&scratch.path().join("base"), &mut rng, 50);
    let rows = read_rows(&base.db());
    let n = rows.len() as u64;
    assert_eq!(rows.iter().map(|r| r.seq).collect::<Vec<_>>(), (1..=n).collect::<Vec<_>>());
    let clean = verify(&base, None).expect("verify runs");
    assert_eq!((clean["ok"].clone(), u64_of(&clean, "events")), (json!(true), n), "the base store verifies");

    let cases: Vec<Mutation> = (0..count).map(|i| Mutation::random(i, &mut rng, &rows, &services)).collect();
    let next = AtomicUsize::new(0);
    let failures: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let cases_dir = scratch.path().join("cases");
    std::thread::scope(|s| {
        for _ in 0..workers() {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    let Some(m) = cases.get(i) else { break };
                    let dir = cases_dir.join(i.to_string());
                    match run_case(&base, &rows, m, &dir) {
                        Ok(()) => {
                            let _ = std::fs::remove_dir_all(&dir);
                        }
                        Err(why) => failures
                            .lock()
                            .expect("failures lock")
                            .push(format!("case {i} {m:?}: {why}\n  tampered copy: {}", dir.display())),
                    }
                }
            });
        }
    });
    let failures = failures.into_inner().expect("failures lock");
    if !failures.is_empty() {
        let kept = scratch.keep();
        panic!(
            "{} of {count} mutations of a {n}-event store were missed or misplaced (TAMPER_SEED={seed}, kept at \
             {}):\n{}",
            failures.len(),
            kept.display(),
            failures.join("\n")
        );
    }
    let mut kinds: BTreeMap<&str, usize> = BTreeMap::new();
    for m in &cases {
        *kinds.entry(m.kind()).or_default() += 1;
    }
    eprintln!(
        "tamper: {count} mutations of a {n}-event store, each detected at its seq by verify and verify --export: \
         {kinds:?}"
    );
}

#[test]
fn clean_random_stores_verify_without_false_positives() {
    let count = env_count("TAMPER_CLEAN", 20);
    let seed = seed("TAMPER_CLEAN_SEED");
    let mut rng = Rng::new(seed);
    let scratch = Scratch::new("clean");
    let seeds: Vec<u64> = (0..count).map(|_| rng.next_u64()).collect();
    let next = AtomicUsize::new(0);
    let failures: Mutex<Vec<String>> = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..workers() {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    let Some(store_seed) = seeds.get(i) else { break };
                    let mut rng = Rng::new(*store_seed);
                    let target = rng.between(20, 80);
                    let dir = scratch.path().join(i.to_string());
                    let (store, _) = build_random_store(&dir, &mut rng, target);
                    let head = store.head();
                    let export = dir.join("export.jsonl");
                    store.ok(&["export", "--out", &export.display().to_string()]);
                    let results = [verify(&store, None), verify(&store, Some(&export))];
                    for r in results {
                        let ok = r.as_ref().is_ok_and(|v| {
                            v["ok"] == json!(true)
                                && v["events"] == head["seq"]
                                && v["epoch"] == head["epoch"]
                                && v["head_hash"] == head["hash"]
                        });
                        if !ok {
                            failures.lock().expect("failures lock").push(format!(
                                "store {i} (seed {store_seed}) at {}: {r:?} (head {head})",
                                dir.display()
                            ));
                        }
                    }
                }
            });
        }
    });
    let failures = failures.into_inner().expect("failures lock");
    assert!(failures.is_empty(), "false positives (TAMPER_CLEAN_SEED={seed}):\n{}", failures.join("\n"));
    eprintln!("clean: {count} random stores verify, from the database and from an export");
}

/// A store whose last changeset is one event re-setting a value it already had, so that
/// dropping that event leaves the tables beside the log equal to a replay.
fn store_ending_in_a_redundant_set(dir: &Path) -> Store {
    let store = Store::in_dir(dir);
    store.init();
    store.ok(&["service", "add", "web"]);
    store.ok(&["set", "web", "a=1", "b=2"]);
    store.ok(&["set", "web", "b", "2"]);
    store
}

fn delete_last_event(store: &Store) -> u64 {
    let conn = Connection::open(store.db()).expect("opening the database");
    conn.execute_batch("DROP TRIGGER events_no_update; DROP TRIGGER events_no_delete;").expect("dropping triggers");
    let last: i64 = conn.query_row("SELECT max(seq) FROM events", [], |r| r.get(0)).expect("max seq");
    conn.execute("DELETE FROM events WHERE seq = ?1", [last]).expect("deleting the last event");
    u64::try_from(last).expect("positive")
}

/// The database records the last verified head (`verified_head`, shown by `head` as
/// `verified_seq`), and confstore itself refuses to write when the log ends before it. So
/// `verify` on the database has what it needs to find a deleted last event, at its seq.
#[test]
fn verify_on_the_database_names_a_deleted_last_event() {
    let dir = Scratch::new("tail-deleted");
    let store = store_ending_in_a_redundant_set(dir.path());
    let deleted = delete_last_event(&store);
    let head = store.head();
    assert_eq!(u64_of(&head, "verified_seq"), deleted, "the database remembers event {deleted}: {head}");
    let run = store.run(&["set", "web", "c", "3"]);
    assert!(run.assert_one_error_line().contains("truncated"), "writers notice the truncation:\n{run}");
    let out = verify(&store, None).expect("verify runs");
    assert_eq!(
        (out["ok"].clone(), out["first_bad_seq"].clone()),
        (json!(false), json!(deleted)),
        "verify on the database must report the missing event {deleted}: {out}"
    );
}

/// As above, when the deleted event changed the tables beside the log: the failure must
/// name the missing event, not the last intact one.
#[test]
fn verify_on_the_database_names_a_deleted_last_event_that_changed_state() {
    let dir = Scratch::new("tail-deleted-state");
    let store = store_ending_in_a_redundant_set(dir.path());
    store.ok(&["set", "web", "c", "3"]);
    let deleted = delete_last_event(&store);
    let out = verify(&store, None).expect("verify runs");
    assert_eq!(out["ok"], json!(false), "{out}");
    assert_eq!(
        out["first_bad_seq"],
        json!(deleted),
        "the first bad seq is the missing event {deleted}, not the intact event before it ({}): {out}",
        str_of(&out, "reason")
    );
}

/// The writer checks, when it opens the store, the events after the last verified head, and
/// refuses to write when they fail or when the log ends before that head. An altered last
/// event (its stored hash no longer the verified head's hash) must be refused the same way,
/// not built upon.
#[test]
fn a_store_whose_last_event_was_altered_refuses_writes() {
    let dir = Scratch::new("last-altered");
    let store = Store::in_dir(dir.path());
    store.init();
    store.ok(&["service", "add", "web"]);
    store.ok(&["set", "web", "a=1", "b=2"]);
    let rows = read_rows(&store.db());
    let last = rows.last().expect("events");
    let mutation = Mutation::Flip { seq: last.seq, field: Field::Hash, offset: 0, mask: 1 };
    mutate(&store.db(), &mutation, &rows).expect("tampering");
    let before = store.head();
    let run = store.run(&["set", "web", "c", "3"]);
    assert!(!run.status.success(), "a write on top of an altered last event must be refused:\n{run}");
    assert_eq!(store.head(), before, "nothing may be appended on top of an altered event");
}
