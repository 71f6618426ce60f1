//! The sweeper: every 2 s, each orders instance finishes intake entries older than 10 s that
//! have no order, left by an instance that died between placing and storing an order. It asks
//! inventory again (which answers the reservation it already made) and writes the order
//! create-only, so instances sweeping the same entry, or a request still finishing it, agree on
//! one order, one event and the stock taken once (such a request still answers 201: see
//! `place.rs`).
//!
//! Entries seen with their order are remembered, so each round reads only the orders it has
//! not seen yet.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use serde::de::IgnoredAny;
use shop::model::{self, Intake};
use shop::sidecar::{Error, ms_from_env};
use tokio_util::sync::CancellationToken;

use crate::place::finish;
use crate::{INTAKE, ORDERSTORE, Shop, order_key};

/// How often a round runs, ms, unless `SHOP_SWEEP_EVERY_MS` says otherwise (tests sweep sooner).
const EVERY_MS: u64 = 2_000;
/// How old an entry must be before the sweeper takes it on, ms, unless `SHOP_SWEEP_AFTER_MS`
/// says otherwise.
const AGE_MS: u64 = 10_000;
/// Orders looked up per bulk get.
const CHUNK: usize = 100;

/// Sweeps until `stop`.
pub async fn run(shop: Arc<Shop>, stop: CancellationToken) {
    let ms = |name, default| ms_from_env(name).map_or(default, |d| d.as_millis() as u64);
    let every = Duration::from_millis(ms("SHOP_SWEEP_EVERY_MS", EVERY_MS).max(1));
    let age_ms = ms("SHOP_SWEEP_AFTER_MS", AGE_MS);
    let mut done = HashSet::new();
    // Instances started together sweep at different moments.
    let first = Duration::from_millis(fastrand::u64(0..every.as_millis() as u64));
    tokio::select! {
        _ = stop.cancelled() => return,
        _ = tokio::time::sleep(first) => {}
    }
    loop {
        if let Err(e) = sweep(&shop, age_ms, &mut done).await {
            eprintln!("sweeper: {e}");
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
    }
}

/// One round over entries at least `age_ms` old; `done` holds the ids known to have their order.
async fn sweep(shop: &Shop, age_ms: u64, done: &mut HashSet<String>) -> Result<(), Error> {
    let cutoff = model::now_ms().saturating_sub(age_ms);
    let old: Vec<(String, Intake)> = INTAKE
        .all::<Intake>(&shop.sidecar, None)
        .await?
        .into_iter()
        .filter(|(id, entry)| entry.created <= cutoff && !done.contains(id))
        .collect();
    for chunk in old.chunks(CHUNK) {
        let keys: Vec<String> = chunk.iter().map(|(id, _)| order_key(id)).collect();
        let found = shop
            .sidecar
            .bulk_get::<IgnoredAny>(ORDERSTORE, &keys, None)
            .await?;
        for ((id, entry), order) in chunk.iter().zip(found) {
            if order.is_some() {
                done.insert(id.clone());
                continue;
            }
            match finish(shop, id, entry, None).await {
                Ok((order, wrote)) => {
                    let how = if wrote { "finished" } else { "found finished" };
                    println!("sweeper: order {id} {how}, {:?}", order.status);
                    done.insert(id.clone());
                }
                Err(e) => eprintln!("sweeper: order {id} not finished yet: {e}"),
            }
        }
    }
    Ok(())
}
