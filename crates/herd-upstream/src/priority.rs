//! Region priority levels: which level of a pool's endpoints a request goes to.
//!
//! Endpoints placed in regions form priority levels (0 the own region, then the failover order;
//! unplaced endpoints are level 0). Each request first draws a level by Envoy's priority-load
//! rule: a level takes `min(1, health × overprovisioning)` of the traffic the levels before it
//! left, where health is the level's available endpoints over those configured for it. Traffic
//! stays in the own region while it is healthy enough, spills over as it degrades, and returns
//! as it recovers. The pool counts an ejected or breaker-open endpoint as unavailable, so both
//! move traffic between levels the same way.

use std::collections::HashMap;
use std::net::SocketAddr;

/// Region priorities of a pool's endpoints (all 0 when the pool has no placed endpoints).
#[derive(Debug, Clone, Default)]
pub struct Places {
    /// Priority level of placed addresses; others are level 0.
    pub level: HashMap<SocketAddr, usize>,
    /// Endpoints configured per level, the denominator of a level's health.
    pub configured: Vec<usize>,
    /// Envoy's overprovisioning factor.
    pub overprovisioning: f64,
}

impl Places {
    /// The priority level of `a`.
    pub(crate) fn level_of(&self, a: &SocketAddr) -> usize {
        self.level.get(a).copied().unwrap_or(0)
    }

    /// The level a request goes to, drawn by the levels' shares of traffic given the
    /// `candidates` available now; `None` when there is only one level.
    pub(crate) fn draw_level<'a>(
        &self,
        candidates: impl IntoIterator<Item = &'a SocketAddr>,
    ) -> Option<usize> {
        if self.configured.len() < 2 {
            return None;
        }
        let mut available = vec![0usize; self.configured.len()];
        for a in candidates {
            let l = self.level_of(a).min(available.len() - 1);
            available[l] += 1;
        }
        let shares = self.shares(&available);
        let mut draw = fastrand::f64();
        let mut level = shares.iter().rposition(|&s| s > 0.0).unwrap_or(0);
        for (l, s) in shares.iter().enumerate() {
            if draw < *s {
                level = l;
                break;
            }
            draw -= s;
        }
        Some(level)
    }

    /// Shares of traffic per level, as Envoy computes priority load: each level takes
    /// `min(1, health × overprovisioning)` of what the levels before it left, and the shares are
    /// scaled up to a whole when every level together is short.
    fn shares(&self, available: &[usize]) -> Vec<f64> {
        let mut left = 1.0f64;
        let mut shares: Vec<f64> = available
            .iter()
            .enumerate()
            .map(|(i, &n)| {
                let total = self.configured.get(i).copied().unwrap_or(0).max(n);
                let health = if total == 0 {
                    0.0
                } else {
                    n as f64 / total as f64
                };
                let share = (health * self.overprovisioning).min(1.0).min(left);
                left -= share;
                share
            })
            .collect();
        let sum: f64 = shares.iter().sum();
        if sum > 0.0 {
            shares.iter_mut().for_each(|s| *s /= sum);
        }
        shares
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn priority_load_follows_envoy() {
        let p = Places {
            level: HashMap::new(),
            configured: vec![4, 4],
            overprovisioning: 1.4,
        };
        assert_eq!(p.shares(&[4, 4]), vec![1.0, 0.0]);
        // 3 of 4 healthy: 0.75 × 1.4 > 1, still all local.
        assert_eq!(p.shares(&[3, 4]), vec![1.0, 0.0]);
        // 2 of 4: 0.5 × 1.4 = 0.7 local, the rest spills over.
        let s = p.shares(&[2, 4]);
        assert!(
            (s[0] - 0.7).abs() < 1e-9 && (s[1] - 0.3).abs() < 1e-9,
            "{s:?}"
        );
        assert_eq!(p.shares(&[0, 4]), vec![0.0, 1.0]);
        // Both short: scaled to a whole.
        let s = p.shares(&[1, 1]);
        assert!(
            (s[0] - 0.5).abs() < 1e-9 && (s[1] - 0.5).abs() < 1e-9,
            "{s:?}"
        );
    }
}
