//! Durability across restarts, and refusal of damaged or foreign data.
//!
//! Every test opens a database in a temporary directory, writes through the
//! real openraft storage API, drops everything, and reopens the directory.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Cursor;
use std::path::Path;

use openraft::storage::{RaftLogStorage, RaftLogStorageExt, RaftStateMachine};
use openraft::{CommittedLeaderId, RaftLogReader, RaftSnapshotBuilder};
use switchboard_storage::codec::{self, CodecError};
use switchboard_storage::engine::{Engine, EngineError, SledEngine, Tree};
use switchboard_storage::state::{Command, Proposal, State};
use switchboard_storage::types::{Entry, LogId, Membership, SnapshotMeta, Vote};
use switchboard_storage::{LogStore, OpenError, StateMachineStore};

fn log_id(term: u64, index: u64) -> LogId {
    LogId::new(CommittedLeaderId::new(term, 1), index)
}

fn blank(term: u64, index: u64) -> Entry {
    Entry { log_id: log_id(term, index), payload: openraft::EntryPayload::Blank }
}

fn proposal(term: u64, index: u64, command: Command) -> Entry {
    Entry {
        log_id: log_id(term, index),
        payload: openraft::EntryPayload::Normal(Proposal { at_ms: 1_000 * index, command }),
    }
}

fn membership(term: u64, index: u64, voters: &[u64]) -> Entry {
    let voters: BTreeSet<u64> = voters.iter().copied().collect();
    let nodes: BTreeMap<u64, openraft::BasicNode> = voters
        .iter()
        .map(|id| (*id, openraft::BasicNode::new(format!("10.0.0.{id}:7000"))))
        .collect();
    Entry {
        log_id: log_id(term, index),
        payload: openraft::EntryPayload::Membership(Membership::new(vec![voters], nodes)),
    }
}

fn put_node(id: u64) -> Command {
    Command::PutNode {
        id,
        grpc_addr: format!("10.0.0.{id}:7000"),
        sip_addr: format!("10.0.0.{id}:5060"),
        capacity: 100,
    }
}

fn open(dir: &Path) -> (LogStore, StateMachineStore) {
    switchboard_storage::open(dir).expect("open storage")
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

fn path_in(err: &dyn std::fmt::Display, dir: &Path) -> bool {
    err.to_string().contains(&dir.display().to_string())
}

#[test]
fn log_survives_restart() {
    let dir = tempfile::tempdir().unwrap();
    let rt = rt();
    let (vote, entries, log_state, committed) = rt.block_on(async {
        let (mut log, _sm) = open(dir.path());
        log.save_vote(&Vote::new(3, 2)).await.unwrap();
        // `blocking_append` goes through the real `append` with a real
        // `LogFlushed` callback and waits for it.
        log.blocking_append((1..=5).map(|i| blank(1, i))).await.unwrap();
        log.blocking_append([membership(2, 6, &[1, 2, 3]), proposal(2, 7, put_node(1))])
            .await
            .unwrap();
        log.blocking_append((8..=10).map(|i| proposal(3, i, Command::ExpireBindings)))
            .await
            .unwrap();
        log.purge(log_id(1, 4)).await.unwrap();
        log.truncate(log_id(3, 10)).await.unwrap();
        log.save_committed(Some(log_id(3, 9))).await.unwrap();

        let vote = log.read_vote().await.unwrap();
        let entries = log.try_get_log_entries(0..).await.unwrap();
        let state = log.get_log_state().await.unwrap();
        let committed = log.read_committed().await.unwrap();
        assert_eq!(entries.first().map(|e| e.log_id.index), Some(5));
        assert_eq!(entries.last().map(|e| e.log_id.index), Some(9));
        assert_eq!(state.last_purged_log_id, Some(log_id(1, 4)));
        assert_eq!(state.last_log_id, Some(log_id(3, 9)));
        (vote, entries, state, committed)
    });

    // Dropped: reopen the same directory.
    rt.block_on(async {
        let (mut log, _sm) = open(dir.path());
        assert_eq!(log.read_vote().await.unwrap(), vote);
        assert_eq!(log.try_get_log_entries(0..).await.unwrap(), entries);
        assert_eq!(log.get_log_state().await.unwrap(), log_state);
        assert_eq!(log.read_committed().await.unwrap(), committed);

        // The reader sees the same thing.
        let mut reader = log.get_log_reader().await;
        assert_eq!(reader.try_get_log_entries(5..=9).await.unwrap(), entries);
        assert!(reader.try_get_log_entries(7..7).await.unwrap().is_empty());
    });
}

#[test]
fn purging_everything_keeps_the_last_log_id() {
    let dir = tempfile::tempdir().unwrap();
    let rt = rt();
    rt.block_on(async {
        let (mut log, _sm) = open(dir.path());
        log.blocking_append((1..=3).map(|i| blank(1, i))).await.unwrap();
        log.purge(log_id(1, 3)).await.unwrap();
    });
    rt.block_on(async {
        let (mut log, _sm) = open(dir.path());
        let state = log.get_log_state().await.unwrap();
        assert_eq!(state.last_purged_log_id, Some(log_id(1, 3)));
        assert_eq!(state.last_log_id, Some(log_id(1, 3)));
        assert!(log.try_get_log_entries(0..).await.unwrap().is_empty());
    });
}

#[test]
fn interrupted_purge_is_finished_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let rt = rt();
    rt.block_on(async {
        let (mut log, _sm) = open(dir.path());
        log.blocking_append((1..=6).map(|i| blank(1, i))).await.unwrap();
        log.purge(log_id(1, 2)).await.unwrap();
    });
    // Simulate a crash between recording last_purged = 4 and deleting entries.
    {
        let engine = SledEngine::open(dir.path()).unwrap();
        let marker = switchboard_storage::codec::encode(&log_id(1, 4)).unwrap();
        engine.insert(Tree::Meta, b"last_purged", &marker).unwrap();
        engine.sync().unwrap();
    }
    rt.block_on(async {
        let (mut log, _sm) = open(dir.path());
        let entries = log.try_get_log_entries(0..).await.unwrap();
        let indexes: Vec<u64> = entries.iter().map(|e| e.log_id.index).collect();
        assert_eq!(indexes, vec![5, 6]);
        assert_eq!(log.get_log_state().await.unwrap().last_purged_log_id, Some(log_id(1, 4)));
    });
}

#[test]
fn state_machine_survives_restart_through_its_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let rt = rt();
    let (state_before, applied_before, membership_before, meta_before) = rt.block_on(async {
        let (_log, mut sm) = open(dir.path());
        let outcomes = sm
            .apply([
                blank(1, 1),
                membership(1, 2, &[1, 2, 3]),
                proposal(1, 3, put_node(1)),
                proposal(1, 4, put_node(2)),
                proposal(1, 5, put_node(3)),
                proposal(1, 6, Command::ExpireBindings),
            ])
            .await
            .unwrap();
        assert_eq!(outcomes.len(), 6, "one outcome per entry");

        let snapshot = sm.get_snapshot_builder().await.build_snapshot().await.unwrap();
        assert_eq!(snapshot.meta.last_log_id, Some(log_id(1, 6)));

        let (applied, membership) = sm.applied_state().await.unwrap();
        let state = sm.reader().read(|state, last| {
            assert_eq!(last, applied);
            state.clone()
        });
        assert_ne!(state, State::default(), "the proposals changed the state");
        (state, applied, membership, snapshot.meta)
    });

    rt.block_on(async {
        let (_log, mut sm) = open(dir.path());
        let state = sm.reader().read(|state, _| state.clone());
        assert_eq!(state, state_before);
        let (applied, membership) = sm.applied_state().await.unwrap();
        assert_eq!(applied, applied_before);
        assert_eq!(membership, membership_before);
        let current = sm.get_current_snapshot().await.unwrap().expect("a persisted snapshot");
        assert_eq!(current.meta, meta_before);

        // Ids are not reused after a restart.
        let next = sm.get_snapshot_builder().await.build_snapshot().await.unwrap();
        assert_ne!(next.meta.snapshot_id, meta_before.snapshot_id);
    });
}

#[test]
fn snapshot_transfers_and_garbage_install_changes_nothing() {
    let leader_dir = tempfile::tempdir().unwrap();
    let follower_dir = tempfile::tempdir().unwrap();
    let rt = rt();
    rt.block_on(async {
        let (_l_log, mut leader) = open(leader_dir.path());
        let (_f_log, mut follower) = open(follower_dir.path());
        leader.apply([membership(1, 1, &[1, 2]), proposal(1, 2, put_node(7))]).await.unwrap();
        follower.apply([membership(1, 1, &[1, 2])]).await.unwrap();
        let good = leader.get_snapshot_builder().await.build_snapshot().await.unwrap();
        let before = follower.reader().read(|s, last| (s.clone(), last));
        let current_before = follower.get_current_snapshot().await.unwrap().map(|s| s.meta);

        // Garbage in every flavour: error, and nothing changes.
        let mut cases: Vec<(&str, Vec<u8>)> = vec![
            ("empty", Vec::new()),
            ("unknown version", vec![200, 1, 2, 3]),
            ("garbage", vec![1, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF]),
        ];
        let good_bytes = good.snapshot.get_ref().clone();
        cases.push(("truncated", good_bytes[..good_bytes.len() / 2].to_vec()));
        let mut trailing = good_bytes.clone();
        trailing.push(0);
        cases.push(("trailing", trailing));
        for (name, bytes) in cases {
            let err = follower
                .install_snapshot(&good.meta, Box::new(Cursor::new(bytes)))
                .await
                .expect_err(name);
            assert!(err.to_string().contains("snapshot"), "{name}: {err}");
            assert_eq!(follower.reader().read(|s, last| (s.clone(), last)), before, "{name}");
            assert_eq!(
                follower.get_current_snapshot().await.unwrap().map(|s| s.meta),
                current_before,
                "{name}"
            );
        }

        // Valid data under the wrong meta is refused too.
        let wrong_meta = SnapshotMeta { last_log_id: Some(log_id(9, 9)), ..good.meta.clone() };
        let err = follower
            .install_snapshot(&wrong_meta, Box::new(Cursor::new(good_bytes.clone())))
            .await
            .expect_err("mismatched meta");
        assert!(err.to_string().contains("does not match"), "{err}");

        // The real one installs.
        follower.install_snapshot(&good.meta, Box::new(Cursor::new(good_bytes))).await.unwrap();
        let leader_view = leader.reader().read(|s, last| (s.clone(), last));
        assert_eq!(follower.reader().read(|s, last| (s.clone(), last)), leader_view);
        assert_eq!(follower.get_current_snapshot().await.unwrap().map(|s| s.meta), Some(good.meta));
    });
}

#[test]
fn foreign_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("notes.txt"), b"not a database").unwrap();
    let err = switchboard_storage::open(dir.path()).expect_err("foreign directory");
    assert!(
        matches!(err, OpenError::Engine(EngineError::NotADatabase { .. })),
        "unexpected error: {err}"
    );
    assert!(path_in(&err, dir.path()), "error should name the directory: {err}");
    assert!(err.to_string().contains("notes.txt"), "{err}");
    // Nothing was created next to the foreign file.
    assert!(!dir.path().join("db").exists());
}

#[test]
fn a_file_instead_of_a_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("data");
    std::fs::write(&file, b"x").unwrap();
    let err = switchboard_storage::open(&file).expect_err("a file is not a data directory");
    assert!(path_in(&err, &file), "{err}");
}

/// Creates a database holding a vote and a few entries, then closes it.
fn populated(dir: &Path) {
    let rt = rt();
    rt.block_on(async {
        let (mut log, mut sm) = open(dir);
        log.save_vote(&Vote::new(1, 1)).await.unwrap();
        log.blocking_append((1..=3).map(|i| blank(1, i))).await.unwrap();
        sm.apply([blank(1, 1)]).await.unwrap();
        sm.get_snapshot_builder().await.build_snapshot().await.unwrap();
    });
}

#[test]
fn garbage_sled_data_file_is_an_error_not_a_fresh_database() {
    let dir = tempfile::tempdir().unwrap();
    populated(dir.path());
    let garbage: Vec<u8> =
        (0..64 * 1024u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    std::fs::write(dir.path().join("db"), &garbage).unwrap();
    let err = switchboard_storage::open(dir.path()).expect_err("garbage db file");
    assert!(matches!(err, OpenError::Engine(_)), "{err}");
    assert!(path_in(&err, dir.path()), "{err}");
}

#[test]
fn garbage_sled_conf_file_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    populated(dir.path());
    std::fs::write(
        dir.path().join("conf"),
        b"segment_size: banana\nuse_compression: maybe\n\x00\x01",
    )
    .unwrap();
    let err = switchboard_storage::open(dir.path()).expect_err("garbage conf file");
    assert!(matches!(err, OpenError::Engine(_)), "{err}");
    assert!(path_in(&err, dir.path()), "{err}");
}

#[test]
fn garbage_vote_is_a_codec_error() {
    let dir = tempfile::tempdir().unwrap();
    populated(dir.path());
    {
        let engine = SledEngine::open(dir.path()).unwrap();
        engine.insert(Tree::Meta, b"vote", &[codec::FORMAT_VERSION, 0xFF, 0xFF]).unwrap();
        engine.sync().unwrap();
    }
    let err = switchboard_storage::open(dir.path()).expect_err("garbage vote");
    match &err {
        OpenError::Corrupt { what, source } => {
            assert!(what.contains("vote"), "{err}");
            assert!(matches!(source, CodecError::Truncated(_) | CodecError::Malformed(_)), "{err}");
        }
        other => panic!("expected a codec error, got {other}"),
    }
    assert!(path_in(&err, dir.path()), "{err}");

    // Read through an already-open store: a StorageError, not a panic.
    let engine = std::sync::Arc::new(SledEngine::open(dir.path()).unwrap());
    let rt = rt();
    rt.block_on(async {
        let (mut log, _sm) = {
            // Bypass `LogStore::open`'s check by corrupting after opening.
            engine
                .insert(
                    Tree::Meta,
                    b"vote",
                    &switchboard_storage::codec::encode(&Vote::new(1, 1)).unwrap(),
                )
                .unwrap();
            let log = LogStore::open(engine.clone()).unwrap();
            engine.insert(Tree::Meta, b"vote", b"\x01garbage").unwrap();
            (log, ())
        };
        let err = log.read_vote().await.expect_err("garbage vote");
        assert!(err.to_string().contains("vote"), "{err}");
    });
}

#[test]
fn garbage_log_entry_is_a_read_error() {
    let dir = tempfile::tempdir().unwrap();
    populated(dir.path());
    let engine = std::sync::Arc::new(SledEngine::open(dir.path()).unwrap());
    let rt = rt();
    rt.block_on(async {
        let mut log = LogStore::open(engine.clone()).unwrap();
        engine.insert(Tree::Log, &2u64.to_be_bytes(), &[1, 7]).unwrap();
        let err = log.try_get_log_entries(0..).await.expect_err("garbage entry");
        assert!(err.to_string().contains("log entry 2"), "{err}");
    });
    drop(engine);
    // The garbage entry is in the middle; reopen still checks first and last
    // only, so corrupt the last one too and expect a refusal.
    {
        let engine = SledEngine::open(dir.path()).unwrap();
        engine.insert(Tree::Log, &3u64.to_be_bytes(), &[1, 7]).unwrap();
        engine.sync().unwrap();
    }
    let err = switchboard_storage::open(dir.path()).expect_err("garbage last entry");
    assert!(matches!(err, OpenError::Corrupt { .. }), "{err}");
}

/// The snapshot file split at its trailer (data, meta): the layout is
/// written out here again, independently of the store's own code.
fn split_snapshot_file(file: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let t = &file[file.len() - 24..];
    assert_eq!(&t[16..], b"SWBSNAP1", "trailer magic");
    let meta_len = u32::from_le_bytes(t[0..4].try_into().unwrap()) as usize;
    let data_len = u64::from_le_bytes(t[4..12].try_into().unwrap()) as usize;
    assert_eq!(data_len + meta_len + 24, file.len());
    (file[..data_len].to_vec(), file[data_len..data_len + meta_len].to_vec())
}

/// A snapshot file of `data` and `meta` with a correct trailer.
fn snapshot_file(data: &[u8], meta: &[u8]) -> Vec<u8> {
    let mut crc = crc32fast::Hasher::new();
    crc.update(data);
    crc.update(meta);
    let mut out = [data, meta].concat();
    out.extend_from_slice(&(meta.len() as u32).to_le_bytes());
    out.extend_from_slice(&(data.len() as u64).to_le_bytes());
    out.extend_from_slice(&crc.finalize().to_le_bytes());
    out.extend_from_slice(b"SWBSNAP1");
    out
}

#[test]
fn a_damaged_snapshot_file_is_refused_on_open_never_reset() {
    let dir = tempfile::tempdir().unwrap();
    populated(dir.path());
    let path = dir.path().join(switchboard_storage::engine::SNAPSHOT_FILE);
    let good = std::fs::read(&path).expect("the snapshot is a file of its own");
    let (data, meta) = split_snapshot_file(&good);
    let refused = |bytes: &[u8], says: &str| {
        std::fs::write(&path, bytes).unwrap();
        let err = switchboard_storage::open(dir.path()).expect_err(says);
        assert!(err.to_string().contains(says), "{says}: {err}");
        assert!(path_in(&err, dir.path()), "{err}");
        err
    };
    // A flipped bit in the data: the checksum catches it.
    let mut flipped = good.clone();
    flipped[0] ^= 0x40;
    refused(&flipped, "checksum mismatch");
    // Torn (a file cut short, e.g. copied by hand): no trailer at its end.
    refused(&good[..good.len() / 2], "no snapshot trailer");
    refused(&good[..10], "shorter than its trailer");
    // Lengths that do not add up.
    let mut longer = good.clone();
    longer.splice(0..0, [0u8; 3]);
    refused(&longer, "file holds");
    // A well-framed file whose data does not decode: a codec error.
    match refused(&snapshot_file(&[1, 0xFF, 0xFF, 0xFF], &meta), "snapshot data") {
        OpenError::Corrupt { what, .. } => assert!(what.contains("snapshot data"), "{what}"),
        other => panic!("expected a codec error, got {other}"),
    }
    // Put back, it opens again: nothing was reset meanwhile.
    std::fs::write(&path, snapshot_file(&data, &meta)).unwrap();
    let (_log, sm) = open(dir.path());
    assert_eq!(sm.reader().read(|_, last| last), Some(log_id(1, 1)));
}

#[test]
fn an_old_layout_snapshot_is_read_then_replaced_by_the_file() {
    let dir = tempfile::tempdir().unwrap();
    populated(dir.path());
    let path = dir.path().join(switchboard_storage::engine::SNAPSHOT_FILE);
    let (data, meta) = split_snapshot_file(&std::fs::read(&path).unwrap());
    // Rewrite the directory as an older version left it: the snapshot in
    // the `snapshot` tree, no file.
    std::fs::remove_file(&path).unwrap();
    {
        let engine = SledEngine::open(dir.path()).unwrap();
        engine.insert(Tree::Snapshot, b"meta", &meta).unwrap();
        engine.insert(Tree::Snapshot, b"data", &data).unwrap();
        engine.sync().unwrap();
    }
    let rt = rt();
    rt.block_on(async {
        let (_log, mut sm) = open(dir.path());
        assert_eq!(sm.reader().read(|_, last| last), Some(log_id(1, 1)), "read from the tree");
        sm.get_snapshot_builder().await.build_snapshot().await.unwrap();
    });
    assert!(path.exists(), "the next snapshot is a file");
    let engine = SledEngine::open(dir.path()).unwrap();
    assert_eq!(engine.get(Tree::Snapshot, b"data").unwrap(), None, "the old copy is gone");
    assert_eq!(engine.get(Tree::Snapshot, b"meta").unwrap(), None);
    drop(engine);

    // A half-written old-layout snapshot (meta without data) is refused.
    std::fs::remove_file(&path).unwrap();
    {
        let engine = SledEngine::open(dir.path()).unwrap();
        engine.insert(Tree::Snapshot, b"meta", &meta).unwrap();
        engine.sync().unwrap();
    }
    let err = StateMachineStore::open(std::sync::Arc::new(SledEngine::open(dir.path()).unwrap()))
        .expect_err("meta without data");
    assert!(matches!(err, OpenError::Inconsistent { .. }), "{err}");
}
