//! Entry point for the fuzz target in `fuzz/` and the corpus replay test: the embedded log
//! opened from arbitrary bytes, as herd opens its file at start-up. Not part of the API.
//!
//! What must hold: opening never panics or hangs (a file herd cannot use is an error naming
//! it); a log that opens takes a publish and delivers it to a new group, after whatever it
//! already held for the topic.

use std::time::Duration;

use crate::{ConsumeOptions, EmbeddedLog, Message, PubSub};

/// Messages read while looking for the one just published, at most.
const READ: usize = 64;

/// `data` as the log's file.
pub fn recover(data: &[u8]) {
    herd_storage::fuzzing::with_file("herd-fuzz-log", data, |path| async move {
        let log = match EmbeddedLog::open(&path, Default::default()) {
            Ok(log) => log,
            Err(e) => {
                assert!(e.to_string().contains("herd-fuzz-log-"), "{e}");
                return;
            }
        };
        let message = Message {
            data: "fuzz-sentinel".into(),
            id: None,
            ttl: None,
            metadata: Default::default(),
        };
        if log.publish("t", message).await.is_err() {
            return;
        }
        let options = ConsumeOptions {
            max_in_flight: 16,
            ack_timeout: Duration::from_secs(60),
        };
        let Ok(mut consumer) = log.consume("t", "fuzz-group", options).await else {
            return;
        };
        for _ in 0..READ {
            match tokio::time::timeout(Duration::from_secs(5), consumer.next()).await {
                Ok(Some(Ok(d))) if d.data().as_ref() == b"fuzz-sentinel" => return,
                Ok(Some(Ok(d))) => drop(d.ack().await),
                Ok(Some(Err(_)) | None) => return,
                Err(_) => panic!("the message just published was not delivered"),
            }
        }
    });
}
