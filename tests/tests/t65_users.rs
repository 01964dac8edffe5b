//! SIP digest credentials (issue 9.4) through the public API: a user put at
//! one node is listed at another (names and realms only, never hashes) and
//! deleted again; malformed credentials are refused; and every node holds
//! the same nonce secret, installed once by the leader.

use std::ops::Bound;
use std::time::Duration;

use switchboard::sip::digest::{ha1, Algorithm};
use switchboard_proto::v1 as pb;
use switchboard_storage::engine::{Engine, SledEngine, Tree};
use switchboard_storage::state::{apply_entry, State};
use switchboard_storage::types::{Entry, EntryPayload};
use switchboard_tests::Cluster;
use tonic::Code;

fn put(user: &str, realm: &str, password: &str) -> pb::PutUserRequest {
    pb::PutUserRequest {
        user: user.into(),
        realm: realm.into(),
        ha1_md5: ha1(Algorithm::Md5, user, realm, password),
        ha1_sha256: ha1(Algorithm::Sha256, user, realm, password),
    }
}

fn linearizable() -> pb::ListUsersRequest {
    pb::ListUsersRequest { consistency: pb::Consistency::Linearizable as i32 }
}

/// The state a node's durable log replays to (no snapshot is taken in a
/// test this short, so the log holds every entry).
fn replayed_state(dir: &std::path::Path) -> State {
    let engine = SledEngine::open(dir).expect("open data directory");
    let mut state = State::default();
    for (_, value) in engine.range(Tree::Log, Bound::Unbounded, Bound::Unbounded).unwrap() {
        let entry: Entry = switchboard_storage::codec::decode(&value).expect("decode entry");
        if let EntryPayload::Normal(p) = &entry.payload {
            let term = entry.log_id.leader_id.term;
            apply_entry(&mut state, entry.log_id.index, term, p.at_ms, &p.command);
        }
    }
    state
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_replicate_without_their_hashes_and_every_node_shares_one_secret() {
    let mut cluster = Cluster::start_with(3, |c| c.registrations.sweep_interval_ms = 100).await;

    let r = cluster.users(1).await.put_user(put("1000", "switchboard", "pw")).await.unwrap();
    assert!(!r.into_inner().replaced);
    let r = cluster.users(2).await.put_user(put("1000", "switchboard", "pw2")).await.unwrap();
    assert!(r.into_inner().replaced);
    cluster.users(1).await.put_user(put("2000", "pbx.example", "x")).await.unwrap();

    let listed = cluster.users(3).await.list_users(linearizable()).await.unwrap().into_inner();
    let names: Vec<(&str, &str)> =
        listed.users.iter().map(|u| (u.user.as_str(), u.realm.as_str())).collect();
    assert_eq!(names, [("1000", "switchboard"), ("2000", "pbx.example")]);

    cluster
        .users(3)
        .await
        .delete_user(pb::DeleteUserRequest { user: "2000".into() })
        .await
        .unwrap();
    let listed = cluster.users(1).await.list_users(linearizable()).await.unwrap().into_inner();
    assert_eq!(listed.users.len(), 1);
    let gone = cluster
        .users(2)
        .await
        .delete_user(pb::DeleteUserRequest { user: "2000".into() })
        .await
        .unwrap_err();
    assert_eq!(gone.code(), Code::NotFound, "{gone:?}");

    // Malformed requests never reach the log.
    let mut short = put("1001", "switchboard", "pw");
    short.ha1_md5.pop();
    let mut long = put("1001", "switchboard", "pw");
    long.ha1_sha256.push(0);
    for bad in [short, long, put("alice", "switchboard", "pw"), put("1001", "", "pw")] {
        let e = cluster.users(2).await.put_user(bad.clone()).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{bad:?}: {e:?}");
    }

    // Give the leader's housekeeping (every 100 ms here) time to have
    // installed the secret, and every node time to apply it.
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    cluster.users(3).await.list_users(linearizable()).await.unwrap();
    // Stopped one by one: the cluster (and its temporary directory) must
    // outlive the reads of the data directories.
    for id in 1..=3 {
        cluster.stop_node(id).await;
    }
    let states: Vec<State> = (1..=3).map(|id| replayed_state(cluster.data_dir(id))).collect();
    let secret = states[0].sip_secret.expect("node 1 holds the SIP secret");
    assert_ne!(*secret.bytes(), [0u8; 32]);
    for (i, s) in states.iter().enumerate() {
        assert_eq!(s.sip_secret, Some(secret), "node {} holds another secret", i + 1);
        assert_eq!(s.users.iter().map(|(n, _)| n).collect::<Vec<_>>(), ["1000"]);
        let u = s.users.get("1000").unwrap();
        assert_eq!(u.ha1_md5[..], ha1(Algorithm::Md5, "1000", "switchboard", "pw2")[..]);
    }
    cluster.shutdown().await;
}
