//! A diagnosis aid, not a test of behaviour: prints, for every data
//! directory under `$SB_INSPECT_DIR` (e.g. the `n<i>.disk.cut<k>` copies the
//! chaos harness keeps with `--keep-data`), the first and last log index and
//! the last purged / committed / vote metadata sizes. Each directory is
//! copied first, since opening runs sled's recovery on it.
//!
//!     SB_INSPECT_DIR=target/jepsen-power/run-.../cluster \
//!       cargo test -p switchboard-storage --test inspect_data -- --ignored --nocapture

use std::ops::Bound;
use std::path::Path;

use switchboard_storage::engine::{Engine, SledEngine, Tree};

fn index(key: &[u8]) -> u64 {
    key.get(..8).and_then(|k| k.try_into().ok()).map_or(0, u64::from_be_bytes)
}

fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), target)?;
        }
    }
    Ok(())
}

#[test]
#[ignore = "diagnosis aid: needs SB_INSPECT_DIR"]
fn print_log_bounds() {
    let Ok(root) = std::env::var("SB_INSPECT_DIR") else {
        println!("set SB_INSPECT_DIR");
        return;
    };
    let mut dirs: Vec<_> = std::fs::read_dir(&root)
        .expect("SB_INSPECT_DIR")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.join("data").join("db").exists())
        .collect();
    dirs.sort();
    for dir in dirs {
        let tmp = tempfile::tempdir().unwrap();
        copy_dir(&dir.join("data"), tmp.path()).unwrap();
        match SledEngine::open(tmp.path()) {
            Ok(engine) => {
                let first = engine.first(Tree::Log).unwrap().map(|(k, _)| index(&k));
                let last = engine.last(Tree::Log).unwrap().map(|(k, _)| index(&k));
                let n = engine.range(Tree::Log, Bound::Unbounded, Bound::Unbounded).unwrap().len();
                let meta: Vec<String> = engine
                    .range(Tree::Meta, Bound::Unbounded, Bound::Unbounded)
                    .unwrap()
                    .into_iter()
                    .map(|(k, v)| format!("{}={}B", String::from_utf8_lossy(&k), v.len()))
                    .collect();
                println!(
                    "{}: log {first:?}..={last:?} ({n} entries); meta {}",
                    dir.file_name().unwrap_or_default().to_string_lossy(),
                    meta.join(" ")
                );
            }
            Err(e) => println!("{}: {e}", dir.display()),
        }
    }
}
