//! Entry point for the fuzz target in `fuzz/` and the corpus replay test: the embedded store
//! opened from arbitrary bytes, as herd opens its file at start-up. Not part of the API.
//!
//! What must hold: opening never panics or hangs (a file herd cannot use is an error naming
//! it); a store that opens serves every key it lists without panicking and takes a write that
//! reads back.

use crate::{Consistency, Embedded, Guard, SetOp, StateStore, WriteOp};

/// `data` as the store's file.
pub fn recover(data: &[u8]) {
    herd_storage::fuzzing::with_file("herd-fuzz-state", data, |path| async move {
        let store = match Embedded::open(&path) {
            Ok(store) => store,
            Err(e) => {
                assert!(e.to_string().contains("herd-fuzz-state-"), "{e}");
                return;
            }
        };
        if let Ok(keys) = store.keys(64).await {
            let _ = store.bulk_get(&keys).await;
        }
        let _ = store.outbox_peek(64).await;
        let set = SetOp {
            key: "fuzz-written".into(),
            value: "1".into(),
            ttl: None,
            guard: Guard::default(),
        };
        if store.transact(vec![WriteOp::Set(set)]).await.is_ok() {
            let got = store
                .get("fuzz-written", Consistency::Strong)
                .await
                .expect("a written key reads back");
            assert_eq!(got.map(|v| v.value), Some("1".into()));
        }
    });
}
