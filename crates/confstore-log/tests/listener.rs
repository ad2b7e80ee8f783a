//! The commit listener: it hears every committed event exactly once, in seq order, before
//! the appender is answered (so a read model fed by it shows every acknowledged write), and
//! `refresh` brings in what another process appended.

mod common;

use std::sync::{Arc, Mutex};

use common::*;
use confstore_core::State;
use confstore_log::{Committed, DbOptions, Store};
use serde_json::json;

/// A read model as the server keeps one: state folded from what the listener hears.
#[derive(Default)]
struct Model {
    state: State,
    heard: Vec<u64>,
    batches: usize,
}

fn attach(store: &Store) -> Arc<Mutex<Model>> {
    let model = Arc::new(Mutex::new(Model::default()));
    let m = Arc::clone(&model);
    store.set_commit_listener(Box::new(move |c: &Committed<'_>| {
        let mut m = m.lock().unwrap();
        if c.events.is_empty() {
            m.state = c.state.clone();
            return;
        }
        m.batches += 1;
        for f in c.events {
            m.heard.push(f.seq());
            m.state.apply(f);
        }
        assert_eq!(c.events.last().map(|f| *f.hash()), Some(c.head_hash), "each event comes with its hash");
        assert_eq!(&m.state, c.state, "the folded state equals the writer's");
    }));
    model
}

#[test]
fn every_acknowledged_write_is_heard_first_in_order() {
    let (_t, store) = temp_store();
    store.append(draft(vec![register("a")])).unwrap();
    let model = attach(&store);
    assert_eq!(model.lock().unwrap().state.seq, 2, "it starts from the current state");
    let store = Arc::new(store);
    let threads: Vec<_> = (0..4)
        .map(|w| {
            let (store, model) = (Arc::clone(&store), Arc::clone(&model));
            std::thread::spawn(move || {
                for i in 0..50 {
                    let r = store.append(draft(vec![set("a", &format!("k{w}"), json!(i))])).unwrap();
                    // Read-your-writes: the model already holds this changeset.
                    assert!(model.lock().unwrap().state.seq >= r.last_seq);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let m = model.lock().unwrap();
    assert_eq!(m.heard, (3..=202).collect::<Vec<u64>>(), "each event once, in seq order");
    assert!(m.batches <= 200);
    assert_eq!(m.state, store.reader().unwrap().replay(confstore_log::Until::Head).unwrap());
}

#[test]
fn refresh_folds_in_another_writers_events() {
    let (t, store) = temp_store();
    store.append(draft(vec![register("a")])).unwrap();
    let model = attach(&store);
    // A second store on the same file: another process, as far as the first can tell.
    let other = Store::open(&t.path, Some(key(1)), clock(), &DbOptions::default()).unwrap();
    other.append(draft(vec![set("a", "x", json!(1))])).unwrap();
    other.append(draft(vec![set("a", "y", json!(2))])).unwrap();
    assert_eq!(model.lock().unwrap().state.seq, 2, "not heard before a refresh");
    store.refresh().unwrap();
    let m = model.lock().unwrap();
    assert_eq!(m.heard, vec![3, 4]);
    assert_eq!(m.state.value("a", "y"), Some("2"));
    drop(m);
    // Nothing new: a refresh is a no-op (data_version unchanged).
    store.refresh().unwrap();
    assert_eq!(model.lock().unwrap().heard.len(), 2);
}
