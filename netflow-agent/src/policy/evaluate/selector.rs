//! Label selectors as the evaluator holds them: read once from a policy,
//! each distinct selector kept once. A generated policy set names the same
//! few thousand workloads in millions of peers; k8s-openapi's
//! `LabelSelector` (a `BTreeMap` per selector, ~550 bytes for one label)
//! held per peer was most of `policy verify`'s memory.

use std::{
    collections::{BTreeMap, HashMap},
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
///
/// A selector is looked up by its terms written out flat (length-prefixed
/// strings in one buffer, reused): a generated set reads millions of peers
/// naming a few thousand selectors, and building each one's terms only to
/// find an equal one held and drop them was most of interning.
#[derive(Debug, Default)]
pub struct SelectorInterner {
    held: HashMap<Box<[u8]>, Selector, foldhash::fast::RandomState>,
    flat: Vec<u8>,
}

impl SelectorInterner {
    /// `selector` as held: an equal one read before, or this one.
    pub fn intern(&mut self, selector: &LabelSelector) -> Selector {
        let labels = selector.match_labels.iter().flatten();
        let expressions = selector.match_expressions.iter().flatten();
        self.flat.clear();
        // `matchLabels` is a BTreeMap: its pairs come in key order, so
        // equal maps write equal bytes.
        for (key, value) in labels.clone() {
            write_flat(&mut self.flat, b'L', key);
            write_flat(&mut self.flat, b'=', value);
        }
        for requirement in expressions.clone() {
            write_flat(&mut self.flat, b'E', &requirement.key);
            write_flat(&mut self.flat, b'O', &requirement.operator);
            for value in requirement.values.iter().flatten() {
                write_flat(&mut self.flat, b'V', value);
            }
        }
        if let Some(held) = self.held.get(self.flat.as_slice()) {
            return held.clone();
        }
        let terms = Terms {
            labels: labels
                .map(|(key, value)| (key.as_str().into(), value.as_str().into()))
                .collect(),
            expressions: expressions
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
        self.held
            .insert(self.flat.as_slice().into(), selector.clone());
        selector
    }
}

/// Appends one string, tagged with what it is and prefixed with its
/// length, so that no two different selectors write the same bytes.
fn write_flat(flat: &mut Vec<u8>, tag: u8, text: &str) {
    flat.push(tag);
    flat.extend_from_slice(&(text.len() as u64).to_le_bytes());
    flat.extend_from_slice(text.as_bytes());
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

    /// Selectors whose strings, put end to end, are the same are still
    /// different selectors.
    #[test]
    fn different_selectors_are_not_shared() {
        let forms = [
            "{}",
            "{matchLabels: {a: bc}}",
            "{matchLabels: {ab: c}}",
            "{matchLabels: {a: b, c: d}}",
            "{matchLabels: {a: 'b', c: 'd'}, matchExpressions: [{key: x, operator: Exists}]}",
            "{matchExpressions: [{key: a, operator: In, values: [b, c]}]}",
            "{matchExpressions: [{key: a, operator: In, values: [bc]}]}",
            "{matchExpressions: [{key: a, operator: In, values: [b]}, {key: c, operator: Exists}]}",
            "{matchExpressions: [{key: c, operator: Exists}, {key: a, operator: In, values: [b]}]}",
            "{matchExpressions: [{key: a, operator: NotIn, values: [b]}]}",
        ];
        let mut interner = SelectorInterner::default();
        let held: Vec<Selector> = forms
            .iter()
            .map(|yaml| interner.intern(&selector(yaml)))
            .collect();
        for (i, a) in held.iter().enumerate() {
            for (j, b) in held.iter().enumerate() {
                assert_eq!(a == b, i == j, "{} and {}", forms[i], forms[j]);
                assert_eq!(Arc::ptr_eq(&a.0, &b.0), i == j);
            }
        }
        let again = interner.intern(&selector(forms[5]));
        assert!(Arc::ptr_eq(&again.0, &held[5].0));
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
