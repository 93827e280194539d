//! The manifests in `deploy/`, and RBAC as requests and roles see it.

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
};

use serde_json::Value;

use super::fake_api::Recorded;

pub fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

/// Every document of a YAML file, as JSON values.
pub fn documents(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap();
    serde_norway::Deserializer::from_str(&text)
        .map(|doc| serde::Deserialize::deserialize(doc).unwrap())
        .filter(|doc: &Value| !doc.is_null())
        .collect()
}

pub fn manifests() -> Vec<PathBuf> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(deploy_dir())
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "yaml"))
        .filter(|path| !path.ends_with("kustomization.yaml"))
        .collect();
    paths.sort();
    paths
}

pub fn object(kind: &str, name: &str) -> Value {
    manifests()
        .iter()
        .flat_map(|path| documents(path))
        .find(|doc| doc["kind"] == kind && doc["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name} in deploy/"))
}

/// (API group, resource, verb) of a request, as RBAC sees it.
pub fn rbac_of(request: &Recorded) -> (String, String, String) {
    let segments: Vec<&str> = request.path.trim_matches('/').split('/').collect();
    let (group, rest) = match segments.as_slice() {
        ["api", "v1", rest @ ..] => ("", rest),
        ["apis", group, _version, rest @ ..] => (*group, rest),
        _ => panic!("not an API path: {}", request.path),
    };
    let rest = match rest {
        ["namespaces", _, tail @ ..] if !tail.is_empty() => tail,
        other => other,
    };
    let (resource, named, sub) = match rest {
        [resource] => (resource.to_string(), false, None),
        [resource, _name] => (resource.to_string(), true, None),
        [resource, _name, sub, ..] => (resource.to_string(), true, Some(sub.to_string())),
        [] => panic!("no resource in {}", request.path),
    };
    let resource = match sub {
        Some(sub) => format!("{resource}/{sub}"),
        None => resource,
    };
    let verb = match (request.method.as_str(), named) {
        // A port-forward is a WebSocket upgrade (a GET) that the API server
        // authorizes as create on pods/portforward.
        ("GET", true) if resource.ends_with("/portforward") => "create",
        ("GET", false) if request.query.contains_key("watch") => "watch",
        ("GET", false) => "list",
        ("GET", true) => "get",
        ("PATCH", _) => "patch",
        (method, _) => panic!("unexpected {method} {}", request.path),
    };
    (group.to_string(), resource, verb.to_string())
}

/// Every (group, resource, verb) the rules of a Role or ClusterRole grant.
pub fn grants(role: &Value) -> BTreeSet<(String, String, String)> {
    let strings = |value: &Value| -> Vec<String> {
        value
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect()
    };
    let mut grants = BTreeSet::new();
    for rule in role["rules"].as_array().unwrap() {
        for group in strings(&rule["apiGroups"]) {
            for resource in strings(&rule["resources"]) {
                for verb in strings(&rule["verbs"]) {
                    assert!(group != "*" && resource != "*" && verb != "*", "{rule}");
                    grants.insert((group.clone(), resource.clone(), verb));
                }
            }
        }
    }
    grants
}
