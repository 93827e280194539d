//! Label selectors as the evaluator holds them: read once from a policy,
//! each distinct selector kept once. A generated policy set names the same
//! few thousand workloads in millions of peers; k8s-openapi's
//! `LabelSelector` (a `BTreeMap` per selector, ~550 bytes for one label)
//! held per peer was most of `policy verify`'s memory.

use std::{
    collections::{BTreeMap, HashSet},
    sync::Arc,
};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

/// One label selector; clones share it. An empty selector matches
/// everything.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Selector(Arc<Terms>);

#[derive(Debug, PartialEq, Eq, Hash)]
struct Terms {
    /// `matchLabels`, in key order.
    labels: Box<[(Box<str>, Box<str>)]>,
    /// `matchExpressions`, in their order.
    expressions: Box<[Requirement]>,
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct Requirement {
    key: Box<str>,
    operator: Operator,
    values: Box<[Box<str>]>,
}

#[derive(Debug, PartialEq, Eq, Hash)]
enum Operator {
    In,
    NotIn,
    Exists,
    DoesNotExist,
    /// An operator the API does not define: the requirement matches
    /// nothing (the API server refuses such a selector).
    Unknown,
}

impl Selector {
    /// Whether `labels` satisfy every term.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let terms = &self.0;
        terms
            .labels
            .iter()
            .all(|(key, value)| labels.get(&**key).map(String::as_str) == Some(&**value))
            && terms.expressions.iter().all(|requirement| {
                let value = labels.get(&*requirement.key).map(String::as_str);
                let listed = |v: &str| requirement.values.iter().any(|listed| &**listed == v);
                match requirement.operator {
                    Operator::In => value.is_some_and(listed),
                    Operator::NotIn => value.is_none_or(|v| !listed(v)),
                    Operator::Exists => value.is_some(),
                    Operator::DoesNotExist => value.is_none(),
                    Operator::Unknown => false,
                }
            })
    }

    /// The `(key, value)` pairs of `matchLabels`, in key order.
    pub fn match_labels(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.labels.iter().map(|(key, value)| (&**key, &**value))
    }

    /// Whether it has `matchExpressions`.
    pub fn has_expressions(&self) -> bool {
        !self.0.expressions.is_empty()
    }

    /// The value `matchLabels` requires of `key`.
    pub fn required(&self, key: &str) -> Option<&str> {
        self.match_labels()
            .find(|(required, _)| *required == key)
            .map(|(_, value)| value)
    }
}

/// Keeps each distinct selector once.
#[derive(Debug, Default)]
pub struct SelectorInterner {
    held: HashSet<Selector>,
}

impl SelectorInterner {
    /// `selector` as held: an equal one read before, or this one.
    pub fn intern(&mut self, selector: &LabelSelector) -> Selector {
        let terms = Terms {
            labels: selector
                .match_labels
                .iter()
                .flatten()
                .map(|(key, value)| (key.as_str().into(), value.as_str().into()))
                .collect(),
            expressions: selector
                .match_expressions
                .iter()
                .flatten()
                .map(|requirement| Requirement {
                    key: requirement.key.as_str().into(),
                    operator: match requirement.operator.as_str() {
                        "In" => Operator::In,
                        "NotIn" => Operator::NotIn,
                        "Exists" => Operator::Exists,
                        "DoesNotExist" => Operator::DoesNotExist,
                        _ => Operator::Unknown,
                    },
                    values: requirement
                        .values
                        .iter()
                        .flatten()
                        .map(|value| value.as_str().into())
                        .collect(),
                })
                .collect(),
        };
        let selector = Selector(Arc::new(terms));
        match self.held.get(&selector) {
            Some(held) => held.clone(),
            None => {
                self.held.insert(selector.clone());
                selector
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn selector(yaml: &str) -> LabelSelector {
        serde_norway::from_str(yaml).unwrap()
    }

    #[test]
    fn equal_selectors_are_held_once() {
        let mut interner = SelectorInterner::default();
        let a = interner.intern(&selector("{matchLabels: {app: web, tier: front}}"));
        let b = interner.intern(&selector("{matchLabels: {tier: front, app: web}}"));
        let c = interner.intern(&selector("{matchLabels: {app: api}}"));
        assert!(Arc::ptr_eq(&a.0, &b.0));
        assert!(!Arc::ptr_eq(&a.0, &c.0));
    }

    /// Every operator, as the API defines it, against the typed selector's
    /// reading (`kubernetes::matches`).
    #[test]
    fn matches_as_the_typed_selector_does() {
        let selectors = [
            "{}",
            "{matchLabels: {app: web}}",
            "{matchLabels: {app: web, tier: front}}",
            "{matchExpressions: [{key: app, operator: In, values: [web, api]}]}",
            "{matchExpressions: [{key: app, operator: NotIn, values: [web]}]}",
            "{matchExpressions: [{key: tier, operator: Exists}]}",
            "{matchExpressions: [{key: tier, operator: DoesNotExist}]}",
            "{matchExpressions: [{key: tier, operator: Gt, values: ['1']}]}",
            "{matchLabels: {app: web}, matchExpressions: [{key: tier, operator: In, values: [front]}]}",
        ];
        let label_sets: Vec<BTreeMap<String, String>> = [
            vec![],
            vec![("app", "web")],
            vec![("app", "api")],
            vec![("app", "web"), ("tier", "front")],
            vec![("app", "db"), ("tier", "back")],
        ]
        .into_iter()
        .map(|pairs| {
            pairs
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        })
        .collect();
        let mut interner = SelectorInterner::default();
        for yaml in selectors {
            let typed = selector(yaml);
            let held = interner.intern(&typed);
            for labels in &label_sets {
                assert_eq!(
                    held.matches(labels),
                    super::super::matches(&typed, labels),
                    "{yaml} on {labels:?}"
                );
            }
        }
    }
}
