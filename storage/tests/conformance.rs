//! openraft's own storage conformance suite, run against [`LogStore`] and
//! [`StateMachineStore`] on a fresh sled database per test case.

use openraft::testing::{StoreBuilder, Suite};
use switchboard_storage::types::{StorageError, StorageIOError};
use switchboard_storage::{LogStore, StateMachineStore, TypeConfig};
use tempfile::TempDir;

/// Opens both stores in a new temporary directory; the directory is the
/// suite's guard value, removed when the case is over.
struct TempDirBuilder;

impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, TempDir> for TempDirBuilder {
    async fn build(&self) -> Result<(TempDir, LogStore, StateMachineStore), StorageError> {
        let dir = tempfile::tempdir().map_err(|e| StorageIOError::write(&e))?;
        let (log, sm) =
            switchboard_storage::open(dir.path()).map_err(|e| StorageIOError::write(&e))?;
        Ok((dir, log, sm))
    }
}

#[test]
fn openraft_conformance_suite() {
    if let Err(e) = Suite::test_all(TempDirBuilder) {
        panic!("conformance suite failed: {e}");
    }
}
