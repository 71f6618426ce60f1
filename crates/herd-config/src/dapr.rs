//! Dapr resource files: the `Component`s, `Subscription`s and `Resiliency` documents of a
//! `--resources-path` folder, added to the config.
//!
//! Every `*.yaml` / `*.yml` file of each directory is read (in name order), each `---`
//! document on its own. Documents of other kinds (`Configuration`, …) are skipped with a
//! note, as are components of building blocks herd does not
//! serve yet; a component of a served block with a bad type or metadata is an error that names
//! the file and line, like a herd.toml error.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::model::{ComponentSpec, Config, Origin, SubscriptionSpec};
use crate::source::{ConfigError, ConfigErrors};

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Resource {
    kind: Option<String>,
    #[serde(default)]
    metadata: ResourceMeta,
    #[serde(default)]
    spec: Spec,
    #[serde(default)]
    scopes: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
struct ResourceMeta {
    name: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Spec {
    #[serde(rename = "type")]
    kind: Option<String>,
    #[serde(default)]
    metadata: Vec<MetaItem>,
    // Subscription (v1alpha1 `route`, v2alpha1 `routes`).
    topic: Option<String>,
    pubsubname: Option<String>,
    route: Option<String>,
    routes: Option<Routes>,
    dead_letter_topic: Option<String>,
    bulk_subscribe: Option<DaprBulk>,
}

/// A Subscription's `spec.bulkSubscribe`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct DaprBulk {
    #[serde(default)]
    enabled: bool,
    max_messages_count: Option<u32>,
    max_await_duration_ms: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
struct Routes {
    default: Option<String>,
    #[serde(default)]
    rules: Vec<RouteRule>,
}

#[derive(Debug, Deserialize)]
struct RouteRule {
    #[serde(rename = "match")]
    matches: String,
    path: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct MetaItem {
    name: String,
    value: Option<serde_norway::Value>,
    secret_key_ref: Option<serde_norway::Value>,
    env_ref: Option<String>,
}

/// Building blocks whose components herd serves; other components are skipped with a note.
const SERVED: &[&str] = &["state.", "lock.", "pubsub."];

/// Loads the components of every resource directory (`[api] resources_path` and `extra`) into
/// `config`. Returns notes about what was skipped.
pub fn load_resources(config: &mut Config, extra: &[PathBuf]) -> Result<Vec<String>, ConfigErrors> {
    let Some(api) = &config.api else {
        if extra.is_empty() {
            return Ok(Vec::new());
        }
        return Err(ConfigErrors(vec![ConfigError {
            file: config.source.path.clone(),
            line: None,
            column: None,
            key: Some("api".into()),
            message: "--resources-path needs the sidecar API: add an [api] table".into(),
        }]));
    };
    let dirs: Vec<PathBuf> = api.resources.iter().chain(extra).cloned().collect();
    let services: Vec<String> = config.services.iter().map(|s| s.name.clone()).collect();
    let mut subscriptions = Vec::new();
    let mut resiliency = Vec::new();
    let mut apps = services.clone();
    apps.push(api.app_id.clone());
    let mut notes = Vec::new();
    let mut errors = Vec::new();
    let mut found = Vec::new();
    for dir in dirs {
        let mut files: Vec<PathBuf> = match std::fs::read_dir(&dir) {
            Ok(entries) => entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
                .collect(),
            Err(e) => {
                errors.push(plain_error(
                    &dir,
                    None,
                    format!("cannot read directory: {e}"),
                ));
                continue;
            }
        };
        files.sort();
        for file in files {
            read_file(
                &file,
                (&services, &apps),
                &mut found,
                &mut subscriptions,
                &mut resiliency,
                &mut notes,
                &mut errors,
            );
        }
    }
    config.components.retain(|c| c.origin != Origin::Default);
    for c in found {
        if config.components.iter().any(|o| o.name == c.name) {
            errors.push(config.component_error(
                &c,
                None,
                format!("component {:?} is defined twice", c.name),
            ));
        } else {
            config.components.push(c);
        }
    }
    crate::api::add_default_store(&mut config.components);
    crate::api::add_default_pubsub(&mut config.components);
    config.subscriptions.extend(subscriptions);
    config.resiliency.extend(resiliency);
    if errors.is_empty() {
        Ok(notes)
    } else {
        Err(ConfigErrors(errors))
    }
}

fn plain_error(file: &Path, line: Option<usize>, message: String) -> ConfigError {
    ConfigError {
        file: file.to_path_buf(),
        line,
        column: None,
        key: None,
        message,
    }
}

/// Splits `text` into `---` documents, each with the line number it starts on.
fn documents(text: &str) -> Vec<(usize, String)> {
    let mut docs = vec![(1, String::new())];
    for (i, line) in text.lines().enumerate() {
        if line.trim_end() == "---" {
            docs.push((i + 2, String::new()));
        } else if let Some((_, doc)) = docs.last_mut() {
            doc.push_str(line);
            doc.push('\n');
        }
    }
    docs.retain(|(_, d)| {
        d.lines()
            .any(|l| !l.trim().is_empty() && !l.trim().starts_with('#'))
    });
    docs
}

/// A Dapr `Subscription`: one [`SubscriptionSpec`] per scoped app (every service when unscoped).
fn subscription(
    file: &Path,
    line: usize,
    resource: Resource,
    services: &[String],
    out: &mut Vec<SubscriptionSpec>,
    errors: &mut Vec<ConfigError>,
) {
    let problem = |key: &str, message: String| ConfigError {
        file: file.to_path_buf(),
        line: Some(line),
        column: None,
        key: Some(key.to_string()),
        message,
    };
    let spec = resource.spec;
    let (Some(topic), Some(pubsub)) = (spec.topic, spec.pubsubname) else {
        errors.push(problem(
            "spec",
            "a Subscription needs spec.topic and spec.pubsubname".into(),
        ));
        return;
    };
    let routes = spec.routes.unwrap_or_default();
    let Some(route) = routes.default.or(spec.route) else {
        errors.push(problem(
            "spec.routes.default",
            "a Subscription needs a default route".into(),
        ));
        return;
    };
    let mut rules = Vec::new();
    for rule in routes.rules {
        match SubscriptionSpec::parse_match(&rule.matches) {
            Some(kind) => rules.push((kind, rule.path)),
            None => errors.push(problem(
                "spec.routes.rules",
                format!(
                    "{:?}: herd evaluates rules of the form event.type == \"<type>\"",
                    rule.matches
                ),
            )),
        }
    }
    let apps: Vec<String> = if resource.scopes.is_empty() {
        services.to_vec()
    } else {
        resource.scopes
    };
    for service in apps {
        if !services.contains(&service) {
            errors.push(problem("scopes", format!("no service named {service:?}")));
            continue;
        }
        out.push(SubscriptionSpec {
            service,
            pubsub: pubsub.clone(),
            topic: topic.clone(),
            route: route.clone(),
            rules: rules.clone(),
            dead_letter_topic: spec.dead_letter_topic.clone(),
            max_in_flight: 16,
            in_order: false,
            max_deliveries: 10,
            bulk: spec.bulk_subscribe.as_ref().and_then(|b| {
                crate::BulkSubscribe::from_dapr(
                    b.enabled,
                    b.max_messages_count,
                    b.max_await_duration_ms,
                )
            }),
        });
    }
}

fn read_file(
    file: &Path,
    (services, apps): (&[String], &[String]),
    found: &mut Vec<ComponentSpec>,
    subscriptions: &mut Vec<SubscriptionSpec>,
    resiliency: &mut Vec<crate::Resiliency>,
    notes: &mut Vec<String>,
    errors: &mut Vec<ConfigError>,
) {
    let text = match std::fs::read_to_string(file) {
        Ok(t) => t,
        Err(e) => {
            errors.push(plain_error(file, None, format!("cannot read: {e}")));
            return;
        }
    };
    for (first, doc) in documents(&text) {
        let resource: Resource = match serde_norway::from_str(&doc) {
            Ok(r) => r,
            Err(e) => {
                errors.push(crate::source::yaml_error(file, &doc, first, &e));
                continue;
            }
        };
        let line_of = |pred: &dyn Fn(&str) -> bool| {
            doc.lines().position(|l| pred(l.trim())).map(|i| first + i)
        };
        let doc_line = line_of(&|l| l.starts_with("kind:")).unwrap_or(first);
        let kind = resource.kind.as_deref().unwrap_or("");
        if kind == "Subscription" {
            subscription(file, doc_line, resource, services, subscriptions, errors);
            continue;
        }
        if kind == "Resiliency" {
            crate::resiliency::from_yaml(file, first, &doc, apps, resiliency, errors);
            continue;
        }
        if kind != "Component" {
            notes.push(format!(
                "{}:{doc_line}: skipped a {kind:?} resource (herd reads Components, Subscriptions and Resiliency here)",
                file.display()
            ));
            continue;
        }
        let Some(name) = resource.metadata.name.filter(|n| crate::api::valid_name(n)) else {
            errors.push(ConfigError {
                file: file.to_path_buf(),
                line: line_of(&|l| l.starts_with("name:")).or(Some(doc_line)),
                column: None,
                key: Some("metadata.name".into()),
                message: "a component needs a name (letters, digits, -, _ and .)".into(),
            });
            continue;
        };
        let component_type = resource.spec.kind.unwrap_or_default();
        if !SERVED.iter().any(|p| component_type.starts_with(p)) {
            notes.push(format!(
                "{}:{doc_line}: skipped component {name:?} of type {component_type:?} (not served by herd)",
                file.display()
            ));
            continue;
        }
        let mut metadata = BTreeMap::new();
        let mut fields = BTreeMap::new();
        for item in resource.spec.metadata {
            let at = line_of(&|l| {
                let l = l.trim_start_matches("- ").trim();
                l.strip_prefix("name:")
                    .is_some_and(|v| v.trim().trim_matches(['"', '\'']) == item.name)
            })
            .unwrap_or(doc_line);
            fields.insert(item.name.clone(), at);
            let problem = |message: String| ConfigError {
                file: file.to_path_buf(),
                line: Some(at),
                column: None,
                key: Some(format!("{name}: spec.metadata.{}", item.name)),
                message,
            };
            let value = if item.secret_key_ref.is_some() {
                errors.push(problem(
                    "secretKeyRef is not supported; use value or envRef".into(),
                ));
                continue;
            } else if let Some(var) = &item.env_ref {
                match std::env::var(var) {
                    Ok(v) => v,
                    Err(_) => {
                        errors.push(problem(format!("envRef: ${var} is not set")));
                        continue;
                    }
                }
            } else {
                match item.value {
                    Some(serde_norway::Value::String(s)) => s,
                    Some(serde_norway::Value::Number(n)) => n.to_string(),
                    Some(serde_norway::Value::Bool(b)) => b.to_string(),
                    None | Some(serde_norway::Value::Null) => String::new(),
                    Some(_) => {
                        errors.push(problem("value must be a string, number or boolean".into()));
                        continue;
                    }
                }
            };
            metadata.insert(item.name, value);
        }
        found.push(ComponentSpec {
            name,
            kind: component_type,
            metadata,
            scopes: resource.scopes,
            origin: Origin::Yaml {
                file: file.to_path_buf(),
                line: line_of(&|l| l.starts_with("type:")).unwrap_or(doc_line),
                fields,
            },
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_keep_their_line_numbers() {
        let text = "# c\nkind: A\n---\nkind: B\n---\n\n";
        let docs = documents(text);
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[0].0, 1);
        assert_eq!(docs[1].0, 4);
        assert!(docs[1].1.starts_with("kind: B"));
    }
}
