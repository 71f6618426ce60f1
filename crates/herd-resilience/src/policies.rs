//! [`Policies`]: Dapr's Resiliency documents, resolved to one [`Policy`] per target.
//!
//! A document ([`Resiliency`]) names policies (`timeouts`, `retries`, `circuitBreakers`) and
//! assigns them to targets (`apps.<id>`, `components.<name>.outbound` / `.inbound`). Each part
//! of a target's policy (timeout, retry, breaker) is resolved on its own, in this order:
//!
//! 1. the part the target's own entry names, in the first document (in load order) that has an
//!    entry for the target and names that part;
//! 2. a policy of that kind with one of Dapr's reserved default names, the most specific first:
//!    for a state store's outbound calls `DefaultStatestoreComponentOutbound<Kind>Policy`, then
//!    `DefaultComponentOutbound<Kind>Policy`, `DefaultComponent<Kind>Policy`,
//!    `Default<Kind>Policy` (`Pubsub…` for pub/sub components, `Lock…` for lock stores;
//!    `DefaultApp<Kind>Policy` then `Default<Kind>Policy` for apps), where `<Kind>` is
//!    `Timeout`, `Retry` or `CircuitBreaker`;
//! 3. herd's built-in behaviour: nothing for components (pub/sub delivery then keeps its own
//!    redelivery), and for apps Dapr's built-in service invocation retries
//!    (`DaprBuiltInServiceRetries`: 3 retries 1 s apart, only when the app cannot be reached;
//!    a retry policy of that name replaces it).
//!
//! A document with `scopes` applies only to calls made for those app ids (the caller: the app a
//! sidecar request came from, or the subscriber a message is delivered to). Policies are built
//! once per target and resolved names and cached, so every caller of a target that resolves to
//! the same policies shares one circuit breaker.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use crate::policy::{Direction, Named, Policy, Retry, RetryOn};
use crate::{Backoff, BreakerConfig};

/// The policy names one target uses (each optional).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TargetPolicies {
    /// A name from `timeouts`.
    pub timeout: Option<String>,
    /// A name from `retries`.
    pub retry: Option<String>,
    /// A name from `circuitBreakers`.
    pub circuit_breaker: Option<String>,
}

/// A component target: the policies of calls to it and of calls it makes to the app.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ComponentTargets {
    /// Calls herd makes to the component (state operations, publishes).
    pub outbound: TargetPolicies,
    /// Calls the component's messages cause herd to make to the app (pub/sub delivery).
    pub inbound: TargetPolicies,
}

/// One Resiliency document: `[resiliency]` of herd.toml, or a Dapr `kind: Resiliency` file.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Resiliency {
    /// Where it came from (`herd.toml`, or the document's `metadata.name`), for logs.
    pub name: String,
    /// App ids it applies to; empty: every app.
    pub scopes: Vec<String>,
    /// `policies.timeouts`: name → per-attempt timeout.
    pub timeouts: BTreeMap<String, Duration>,
    /// `policies.retries`: name → retry.
    pub retries: BTreeMap<String, Retry>,
    /// `policies.circuitBreakers`: name → breaker settings.
    pub circuit_breakers: BTreeMap<String, BreakerConfig>,
    /// `targets.apps`: app id → policies of service invocation calls to it.
    pub apps: BTreeMap<String, TargetPolicies>,
    /// `targets.components`: component name → its policies.
    pub components: BTreeMap<String, ComponentTargets>,
}

impl Resiliency {
    /// Whether the document applies to calls made for `caller`.
    pub fn applies_to(&self, caller: &str) -> bool {
        self.scopes.is_empty() || self.scopes.iter().any(|s| s == caller)
    }

    /// How many named policies it defines.
    pub fn len(&self) -> usize {
        self.timeouts.len() + self.retries.len() + self.circuit_breakers.len()
    }

    /// True when it defines no policy.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Dapr's name for the policies retrying service invocation when no policy says otherwise.
pub const BUILT_IN_SERVICE_RETRIES: &str = "DaprBuiltInServiceRetries";

/// herd's built-in service invocation retry: Dapr's, 3 retries 1 s apart.
pub const BUILT_IN_SERVICE_RETRY: Retry = Retry {
    backoff: Backoff::Constant(Duration::from_secs(1)),
    max_retries: Some(3),
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Timeout,
    Retry,
    CircuitBreaker,
}

impl Kind {
    fn word(self) -> &'static str {
        match self {
            Kind::Timeout => "Timeout",
            Kind::Retry => "Retry",
            Kind::CircuitBreaker => "CircuitBreaker",
        }
    }
}

/// What a lookup is about.
#[derive(Debug, Clone, Copy)]
enum Subject<'a> {
    App(&'a str),
    Outbound(&'a str),
    Inbound(&'a str),
}

type Cache = RwLock<HashMap<String, HashMap<String, Arc<Policy>>>>;

/// Every Resiliency document, resolving targets to shared [`Policy`]s.
#[derive(Debug, Default)]
pub struct Policies {
    docs: Vec<Resiliency>,
    /// Component name → Dapr's keyword for its building block (`Statestore`, `Pubsub`, `Lock`).
    blocks: HashMap<String, &'static str>,
    /// (resolved names) → policy, so that callers resolving alike share a breaker.
    built: RwLock<HashMap<String, Arc<Policy>>>,
    apps: Cache,
    outbound: Cache,
    inbound: Cache,
}

impl Policies {
    /// Policies from `docs` (in precedence order) for `components` given as (name, Dapr type).
    pub fn new(
        docs: Vec<Resiliency>,
        components: impl IntoIterator<Item = (String, String)>,
    ) -> Self {
        let blocks: HashMap<String, &'static str> = components
            .into_iter()
            .filter_map(|(name, kind)| {
                let block = match kind.split('.').next()? {
                    "state" => "Statestore",
                    "pubsub" => "Pubsub",
                    "lock" => "Lock",
                    _ => return None,
                };
                Some((name, block))
            })
            .collect();
        for doc in &docs {
            for name in doc.components.keys().filter(|n| !blocks.contains_key(*n)) {
                tracing::warn!(
                    "resiliency {}: targets.components.{name} names no state, lock or pub/sub component; it has no effect",
                    doc.name
                );
            }
        }
        let loaded: usize = docs.iter().map(Resiliency::len).sum();
        metrics::gauge!("herd_resiliency_loaded").set(loaded as f64);
        for doc in &docs {
            tracing::info!(
                "resiliency {}: {} timeouts, {} retries, {} circuit breakers{}",
                doc.name,
                doc.timeouts.len(),
                doc.retries.len(),
                doc.circuit_breakers.len(),
                if doc.scopes.is_empty() {
                    String::new()
                } else {
                    format!(" for {}", doc.scopes.join(", "))
                }
            );
        }
        Self {
            docs,
            blocks,
            ..Self::default()
        }
    }

    /// The policy of service invocation calls made for `caller` to the app `id`.
    pub fn app(&self, caller: &str, id: &str) -> Arc<Policy> {
        self.cached(&self.apps, caller, Subject::App(id))
    }

    /// The policy of calls made for `caller` to the component `name` (state operations,
    /// publishes).
    pub fn component_outbound(&self, caller: &str, name: &str) -> Arc<Policy> {
        self.cached(&self.outbound, caller, Subject::Outbound(name))
    }

    /// The policy of deliveries of the component `name`'s messages to the app `caller`.
    pub fn component_inbound(&self, caller: &str, name: &str) -> Arc<Policy> {
        self.cached(&self.inbound, caller, Subject::Inbound(name))
    }

    fn cached(&self, cache: &Cache, caller: &str, subject: Subject<'_>) -> Arc<Policy> {
        let target = match subject {
            Subject::App(t) | Subject::Outbound(t) | Subject::Inbound(t) => t,
        };
        if let Some(p) = cache
            .read()
            .expect("policies poisoned")
            .get(target)
            .and_then(|m| m.get(caller))
        {
            return p.clone();
        }
        let policy = self.resolve(caller, subject);
        cache
            .write()
            .expect("policies poisoned")
            .entry(target.to_string())
            .or_default()
            .entry(caller.to_string())
            .or_insert(policy)
            .clone()
    }

    /// Default names for `kind`, most specific first.
    fn default_names(&self, subject: Subject<'_>, kind: Kind) -> Vec<String> {
        let word = kind.word();
        let scopes: Vec<String> = match subject {
            Subject::App(_) => vec!["App".into()],
            Subject::Outbound(name) | Subject::Inbound(name) => {
                let way = if matches!(subject, Subject::Outbound(_)) {
                    "Outbound"
                } else {
                    "Inbound"
                };
                let mut s = Vec::new();
                if let Some(block) = self.blocks.get(name) {
                    s.push(format!("{block}Component{way}"));
                }
                s.push(format!("Component{way}"));
                s.push("Component".into());
                s
            }
        };
        scopes
            .iter()
            .map(|s| format!("Default{s}{word}Policy"))
            .chain([format!("Default{word}Policy")])
            .collect()
    }

    fn defines(doc: &Resiliency, kind: Kind, name: &str) -> bool {
        match kind {
            Kind::Timeout => doc.timeouts.contains_key(name),
            Kind::Retry => doc.retries.contains_key(name),
            Kind::CircuitBreaker => doc.circuit_breakers.contains_key(name),
        }
    }

    /// The (document index, policy name) for one part of `subject`'s policy.
    fn pick(&self, caller: &str, subject: Subject<'_>, kind: Kind) -> Option<(usize, String)> {
        let in_scope = || {
            self.docs
                .iter()
                .enumerate()
                .filter(|(_, d)| d.applies_to(caller))
        };
        for (i, doc) in in_scope() {
            let entry = match subject {
                Subject::App(id) => doc.apps.get(id),
                Subject::Outbound(n) => doc.components.get(n).map(|c| &c.outbound),
                Subject::Inbound(n) => doc.components.get(n).map(|c| &c.inbound),
            };
            let named = entry.and_then(|e| match kind {
                Kind::Timeout => e.timeout.as_ref(),
                Kind::Retry => e.retry.as_ref(),
                Kind::CircuitBreaker => e.circuit_breaker.as_ref(),
            });
            if let Some(name) = named.filter(|n| Self::defines(doc, kind, n)) {
                return Some((i, name.clone()));
            }
        }
        for name in self.default_names(subject, kind) {
            if let Some((i, _)) = in_scope().find(|(_, d)| Self::defines(d, kind, &name)) {
                return Some((i, name));
            }
        }
        None
    }

    fn resolve(&self, caller: &str, subject: Subject<'_>) -> Arc<Policy> {
        let (target, direction) = match subject {
            Subject::App(id) => (format!("app_{id}"), Direction::Outbound),
            Subject::Outbound(n) => (format!("component_{n}"), Direction::Outbound),
            Subject::Inbound(n) => (format!("component_{n}"), Direction::Inbound),
        };
        let timeout = self.pick(caller, subject, Kind::Timeout);
        let mut retry = self.pick(caller, subject, Kind::Retry);
        let breaker = self.pick(caller, subject, Kind::CircuitBreaker);
        let mut retry_on = RetryOn::Failures;
        if retry.is_none() && matches!(subject, Subject::App(_)) {
            retry_on = RetryOn::Unreachable;
            retry = self
                .docs
                .iter()
                .enumerate()
                .find(|(_, d)| {
                    d.applies_to(caller) && d.retries.contains_key(BUILT_IN_SERVICE_RETRIES)
                })
                .map(|(i, _)| (i, BUILT_IN_SERVICE_RETRIES.to_string()));
        }
        let key = format!(
            "{target}|{}|{timeout:?}|{retry:?}|{breaker:?}",
            direction.as_str()
        );
        if let Some(p) = self.built.read().expect("policies poisoned").get(&key) {
            return p.clone();
        }
        let timeout = timeout.map(|(i, name)| Named {
            value: self.docs[i].timeouts[&name],
            name,
        });
        let retry = match retry {
            Some((i, name)) => Some((
                Named {
                    value: self.docs[i].retries[&name],
                    name,
                },
                retry_on,
            )),
            None if matches!(subject, Subject::App(_)) => Some((
                Named {
                    name: BUILT_IN_SERVICE_RETRIES.to_string(),
                    value: BUILT_IN_SERVICE_RETRY,
                },
                RetryOn::Unreachable,
            )),
            None => None,
        };
        let breaker = breaker.map(|(i, name)| Named {
            value: self.docs[i].circuit_breakers[&name].clone(),
            name,
        });
        let policy = Arc::new(Policy::new(target, direction, timeout, retry, breaker));
        self.built
            .write()
            .expect("policies poisoned")
            .entry(key)
            .or_insert(policy)
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc() -> Resiliency {
        let mut d = Resiliency {
            name: "test".into(),
            ..Resiliency::default()
        };
        d.timeouts.insert("fast".into(), Duration::from_millis(100));
        d.timeouts
            .insert("DefaultTimeoutPolicy".into(), Duration::from_secs(9));
        d.retries.insert(
            "three".into(),
            Retry {
                backoff: Backoff::Constant(Duration::from_millis(10)),
                max_retries: Some(3),
            },
        );
        d.retries.insert(
            "DefaultStatestoreComponentOutboundRetryPolicy".into(),
            Retry {
                backoff: Backoff::Constant(Duration::from_millis(20)),
                max_retries: Some(1),
            },
        );
        d.circuit_breakers
            .insert("cb".into(), BreakerConfig::default());
        d.components.insert(
            "orders".into(),
            ComponentTargets {
                outbound: TargetPolicies {
                    timeout: Some("fast".into()),
                    retry: Some("three".into()),
                    circuit_breaker: Some("cb".into()),
                },
                inbound: TargetPolicies::default(),
            },
        );
        d
    }

    fn policies(docs: Vec<Resiliency>) -> Policies {
        Policies::new(
            docs,
            [
                ("orders".to_string(), "state.redis".to_string()),
                ("other".to_string(), "state.embedded".to_string()),
                ("pubsub".to_string(), "pubsub.embedded".to_string()),
            ],
        )
    }

    #[test]
    fn explicit_targets_win_then_the_most_specific_default() {
        let p = policies(vec![doc()]);
        let orders = p.component_outbound("app", "orders");
        assert_eq!(orders.timeout(), Some(Duration::from_millis(100)));
        assert_eq!(orders.retry().unwrap().0.max_retries, Some(3));
        assert!(orders.breaker_state().is_some());
        let other = p.component_outbound("app", "other");
        assert_eq!(other.timeout(), Some(Duration::from_secs(9)));
        assert_eq!(other.retry().unwrap().0.max_retries, Some(1));
        assert!(other.breaker_state().is_none());
        // The state-store default does not reach pub/sub; the general timeout does.
        let publish = p.component_outbound("app", "pubsub");
        assert!(publish.retry().is_none());
        assert_eq!(publish.timeout(), Some(Duration::from_secs(9)));
    }

    #[test]
    fn callers_of_a_target_share_its_breaker() {
        let p = policies(vec![doc()]);
        let a = p.component_outbound("a", "orders");
        let b = p.component_outbound("b", "orders");
        assert!(Arc::ptr_eq(&a, &b));
    }

    #[test]
    fn scoped_documents_apply_only_to_their_apps() {
        let mut d = doc();
        d.scopes = vec!["checkout".into()];
        let p = policies(vec![d]);
        assert!(!p.component_outbound("checkout", "orders").is_empty());
        assert!(p.component_outbound("cart", "orders").is_empty());
    }

    #[test]
    fn apps_get_the_built_in_retries_unless_configured() {
        let p = policies(vec![]);
        let (retry, on) = p.app("a", "b").retry().unwrap();
        assert_eq!(retry, BUILT_IN_SERVICE_RETRY);
        assert_eq!(on, RetryOn::Unreachable);
        let mut d = doc();
        d.apps.insert(
            "b".into(),
            TargetPolicies {
                retry: Some("three".into()),
                ..TargetPolicies::default()
            },
        );
        let p = policies(vec![d]);
        let (retry, on) = p.app("a", "b").retry().unwrap();
        assert_eq!(retry.max_retries, Some(3));
        assert_eq!(on, RetryOn::Failures);
        assert!(p.component_inbound("a", "pubsub").retry().is_none());
    }
}
