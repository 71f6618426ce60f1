//! Lists kept in state: 16 buckets (`<prefix>-0` … `<prefix>-15`), each a JSON object from id to
//! entry, updated with ETags. Orders' intake (`intake-N`) and notifications' index (`index-N`)
//! are such lists: a listing reads the 16 buckets in one bulk get, and writers of different ids
//! mostly meet on different buckets, so ETag conflicts stay rare under concurrency.
//!
//! An id's bucket is the 32-bit FNV-1a hash of its UTF-8 bytes, modulo 16, so every
//! implementation of a service (Rust or Node.js) puts an id in the same bucket.

use std::collections::BTreeMap;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::retry;
use crate::sidecar::{Error, Sidecar, Write};

/// How many buckets a list has.
pub const BUCKETS: u32 = 16;

/// One bucket's entries, by id.
pub type Entries<V> = BTreeMap<String, V>;

/// The bucket of `id`: FNV-1a (32 bit) of its bytes, modulo [`BUCKETS`].
pub fn bucket(id: &str) -> u32 {
    let mut hash: u32 = 0x811c_9dc5;
    for b in id.bytes() {
        hash ^= u32::from(b);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    hash % BUCKETS
}

/// A bucketed list in one state store.
#[derive(Debug, Clone, Copy)]
pub struct Index {
    store: &'static str,
    prefix: &'static str,
}

impl Index {
    /// The list of buckets `<prefix>-N` in `store`.
    pub const fn new(store: &'static str, prefix: &'static str) -> Self {
        Index { store, prefix }
    }

    /// The key of the bucket holding `id`.
    pub fn key(&self, id: &str) -> String {
        format!("{}-{}", self.prefix, bucket(id))
    }

    /// Every bucket's key.
    pub fn keys(&self) -> Vec<String> {
        (0..BUCKETS)
            .map(|n| format!("{}-{n}", self.prefix))
            .collect()
    }

    /// The bucket holding `id`, and its ETag (`None`: the bucket does not exist yet).
    pub async fn bucket<V: DeserializeOwned>(
        &self,
        sidecar: &Sidecar,
        id: &str,
        traceparent: Option<&str>,
    ) -> Result<(Entries<V>, Option<String>), Error> {
        let found = sidecar
            .get::<Entries<V>>(self.store, &self.key(id), traceparent)
            .await?;
        Ok(match found {
            Some(v) => (v.value, Some(v.etag)),
            None => (Entries::new(), None),
        })
    }

    /// The write of `entries` as the bucket of `id`, if it is still as read (`etag`).
    pub fn write<V: Serialize>(&self, id: &str, entries: &Entries<V>, etag: Option<&str>) -> Write {
        Write::upsert(self.key(id), entries).unchanged_since(etag)
    }

    /// Adds `value` under `id` unless `id` is there already; the entry now there, and whether
    /// it is the one given. Retries on ETag conflicts.
    pub async fn insert<V: Serialize + DeserializeOwned + Clone>(
        &self,
        sidecar: &Sidecar,
        id: &str,
        value: V,
        traceparent: Option<&str>,
    ) -> Result<(V, bool), Error> {
        for attempt in 0..retry::MAX_TRIES {
            let (mut entries, etag) = self.bucket::<V>(sidecar, id, traceparent).await?;
            if let Some(existing) = entries.get(id) {
                return Ok((existing.clone(), false));
            }
            entries.insert(id.to_string(), value.clone());
            let write = self.write(id, &entries, etag.as_deref());
            match sidecar.save(self.store, &[write], traceparent).await {
                Ok(()) => return Ok((value, true)),
                Err(Error::Conflict) => retry::pause(attempt).await,
                Err(e) => return Err(e),
            }
        }
        Err(Error::Conflict)
    }

    /// Every entry of every bucket.
    pub async fn all<V: DeserializeOwned>(
        &self,
        sidecar: &Sidecar,
        traceparent: Option<&str>,
    ) -> Result<Vec<(String, V)>, Error> {
        let buckets = sidecar
            .bulk_get::<Entries<V>>(self.store, &self.keys(), traceparent)
            .await?;
        Ok(buckets
            .into_iter()
            .flatten()
            .flat_map(|b| b.value)
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_fnv1a_modulo_16() {
        // FNV-1a 32 of "" is 0x811c9dc5, of "a" 0xe40c292c.
        assert_eq!(bucket(""), 0x811c_9dc5 % 16);
        assert_eq!(bucket("a"), 0xe40c_292c % 16);
        let index = Index::new("statestore", "intake");
        assert_eq!(index.key("a"), "intake-12");
        assert_eq!(index.keys().len(), 16);
        assert_eq!(index.keys()[15], "intake-15");
        let spread: std::collections::BTreeSet<u32> =
            (0..200).map(|i| bucket(&format!("o-{i:016x}"))).collect();
        assert_eq!(spread.len(), 16, "ids spread over every bucket");
    }
}
