//! Label selectors as the evaluator holds them: read once from a policy,
//! each distinct selector kept once. A generated policy set names the same
//! few thousand workloads in millions of peers; k8s-openapi's
//! `LabelSelector` (a `BTreeMap` per selector, ~550 bytes for one label)
//! held per peer was most of `policy verify`'s memory.

use std::{collections::HashMap, ops::Range, sync::Arc};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};
use serde::{
    Deserializer,
    de::{self, DeserializeSeed, IgnoredAny, MapAccess, Visitor},
};

use super::spec_reader::Field;
use crate::model::LabelMap;

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
    pub fn matches(&self, labels: &LabelMap) -> bool {
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
    /// `matchLabels` as read by [`SelectorSeed`]: the strings, end to end,
    /// and each pair's place in them.
    read_text: Vec<u8>,
    read_pairs: Vec<(Range<usize>, Range<usize>)>,
}

impl SelectorInterner {
    /// `selector` as held: an equal one read before, or this one.
    pub fn intern(&mut self, selector: &LabelSelector) -> Selector {
        self.flat.clear();
        // `matchLabels` is a BTreeMap: its pairs come in key order, so
        // equal maps write equal bytes.
        for (key, value) in selector.match_labels.iter().flatten() {
            write_flat(&mut self.flat, LABEL_KEY, key);
            write_flat(&mut self.flat, LABEL_VALUE, value);
        }
        self.write_expressions(selector.match_expressions.as_deref());
        self.intern_flat()
    }

    fn write_expressions(&mut self, expressions: Option<&[LabelSelectorRequirement]>) {
        for requirement in expressions.into_iter().flatten() {
            write_flat(&mut self.flat, EXPRESSION_KEY, &requirement.key);
            write_flat(&mut self.flat, OPERATOR, &requirement.operator);
            for value in requirement.values.iter().flatten() {
                write_flat(&mut self.flat, VALUE, value);
            }
        }
    }

    /// The selector written in `flat`, as held.
    fn intern_flat(&mut self) -> Selector {
        if let Some(held) = self.held.get(self.flat.as_slice()) {
            return held.clone();
        }
        let selector = Selector(Arc::new(Terms::from_flat(&self.flat)));
        self.held
            .insert(self.flat.as_slice().into(), selector.clone());
        selector
    }
}

// What each string of a selector written flat is.
const LABEL_KEY: u8 = b'L';
const LABEL_VALUE: u8 = b'=';
const EXPRESSION_KEY: u8 = b'E';
const OPERATOR: u8 = b'O';
const VALUE: u8 = b'V';

/// Appends one string, tagged with what it is and prefixed with its
/// length, so that no two different selectors write the same bytes.
fn write_flat(flat: &mut Vec<u8>, tag: u8, text: &str) {
    write_flat_bytes(flat, tag, text.as_bytes());
}

impl Terms {
    /// The terms [`write_flat`] wrote, in their order.
    fn from_flat(mut flat: &[u8]) -> Self {
        let mut labels: Vec<(Box<str>, Box<str>)> = Vec::new();
        let mut expressions: Vec<Requirement> = Vec::new();
        while let Some((&tag, rest)) = flat.split_first() {
            let (length, rest) = rest.split_at(8);
            let length = u64::from_le_bytes(length.try_into().unwrap_or_default()) as usize;
            let (text, rest) = rest.split_at(length);
            flat = rest;
            // Written from strings: never lossy.
            let text: Box<str> = String::from_utf8_lossy(text).into();
            match tag {
                LABEL_KEY => labels.push((text, Box::default())),
                LABEL_VALUE => {
                    if let Some(pair) = labels.last_mut() {
                        pair.1 = text;
                    }
                }
                EXPRESSION_KEY => expressions.push(Requirement {
                    key: text,
                    operator: Operator::Unknown,
                    values: Box::default(),
                }),
                OPERATOR => {
                    if let Some(requirement) = expressions.last_mut() {
                        requirement.operator = match &*text {
                            "In" => Operator::In,
                            "NotIn" => Operator::NotIn,
                            "Exists" => Operator::Exists,
                            "DoesNotExist" => Operator::DoesNotExist,
                            _ => Operator::Unknown,
                        };
                    }
                }
                _ => {
                    if let Some(requirement) = expressions.last_mut() {
                        let mut values = std::mem::take(&mut requirement.values).into_vec();
                        values.push(text);
                        requirement.values = values.into();
                    }
                }
            }
        }
        Terms {
            labels: labels.into(),
            expressions: expressions.into(),
        }
    }
}

/// Reads a `LabelSelector` straight into the selector held for it, without
/// building the typed object: a generated set has millions.
pub struct SelectorSeed<'i> {
    pub selectors: &'i mut SelectorInterner,
}

impl<'de> DeserializeSeed<'de> for SelectorSeed<'_> {
    type Value = Selector;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Selector, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for SelectorSeed<'_> {
    type Value = Selector;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a LabelSelector")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Selector, A::Error> {
        let selectors = self.selectors;
        selectors.read_text.clear();
        selectors.read_pairs.clear();
        let mut expressions: Option<Vec<LabelSelectorRequirement>> = None;
        while let Some(field) = map.next_key::<Field>()? {
            match field {
                Field::MatchLabels => {
                    // A field given twice counts once, as its last value.
                    selectors.read_text.clear();
                    selectors.read_pairs.clear();
                    map.next_value_seed(OptionSeed(LabelsSeed {
                        text: &mut selectors.read_text,
                        pairs: &mut selectors.read_pairs,
                    }))?;
                }
                Field::MatchExpressions => expressions = map.next_value()?,
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        // As a BTreeMap holds them: in key order, a key given twice with
        // its last value.
        let text = &selectors.read_text;
        let pairs = &mut selectors.read_pairs;
        pairs.sort_by(|a, b| text[a.0.clone()].cmp(&text[b.0.clone()]));
        selectors.flat.clear();
        for (index, (key, value)) in pairs.iter().enumerate() {
            let next_key = pairs.get(index + 1).map(|next| &text[next.0.clone()]);
            if next_key == Some(&text[key.clone()]) {
                continue;
            }
            write_flat_bytes(&mut selectors.flat, LABEL_KEY, &text[key.clone()]);
            write_flat_bytes(&mut selectors.flat, LABEL_VALUE, &text[value.clone()]);
        }
        selectors.write_expressions(expressions.as_deref());
        Ok(selectors.intern_flat())
    }
}

/// [`write_flat`] of a string's bytes.
fn write_flat_bytes(flat: &mut Vec<u8>, tag: u8, text: &[u8]) {
    flat.push(tag);
    flat.extend_from_slice(&(text.len() as u64).to_le_bytes());
    flat.extend_from_slice(text);
}

/// `matchLabels`: each key and value appended to `text`, their places to
/// `pairs`.
struct LabelsSeed<'t> {
    text: &'t mut Vec<u8>,
    pairs: &'t mut Vec<(Range<usize>, Range<usize>)>,
}

impl<'de> DeserializeSeed<'de> for LabelsSeed<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for LabelsSeed<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a map of labels")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key_seed(AppendSeed(self.text))? {
            let value = map.next_value_seed(AppendSeed(self.text))?;
            self.pairs.push((key, value));
        }
        Ok(())
    }
}

/// A string, appended to the buffer; its place in it.
struct AppendSeed<'t>(&'t mut Vec<u8>);

impl<'de> DeserializeSeed<'de> for AppendSeed<'_> {
    type Value = Range<usize>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Range<usize>, D::Error> {
        // As a `String` asks for it.
        deserializer.deserialize_string(self)
    }
}

impl Visitor<'_> for AppendSeed<'_> {
    type Value = Range<usize>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a string")
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<Range<usize>, E> {
        let start = self.0.len();
        self.0.extend_from_slice(text.as_bytes());
        Ok(start..self.0.len())
    }
}

/// An optional value read by `S`; `null` is none.
pub struct OptionSeed<S>(pub S);

impl<'de, S: DeserializeSeed<'de>> DeserializeSeed<'de> for OptionSeed<S> {
    type Value = Option<S::Value>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_option(self)
    }
}

impl<'de, S: DeserializeSeed<'de>> Visitor<'de> for OptionSeed<S> {
    type Value = Option<S::Value>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an optional value")
    }

    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        self.0.deserialize(deserializer).map(Some)
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
        let label_sets: Vec<LabelMap> = [
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
