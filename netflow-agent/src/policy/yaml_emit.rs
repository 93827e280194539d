//! Block YAML for policies, written straight from `Serialize`.
//!
//! A generated policy set at 10 000 workloads is ~500 MB of YAML, and
//! serde_norway's emitter (libyaml's, event by event, every plain string
//! parsed again to see whether it would read back as a number) was most of
//! `policy generate`'s time. This writes the same block style in one pass:
//! `key: value`, `- item`, `{}`/`[]` for empty collections, a string plain
//! when it can only read back as that string, single-quoted when it has no
//! line break and no control character, a literal block (`|-`) for plain
//! multi-line text (evidence annotations), double-quoted with escapes
//! otherwise. What it writes reads back (in serde_norway and in YAML 1.1
//! parsers such as kubectl's, where `yes`, `on` or `1:20` are not strings)
//! as exactly what was serialized; the tests hold that against serde_norway's
//! own output.

use std::io::Write;

use serde::{Serialize, ser};

#[derive(Debug, thiserror::Error)]
pub enum EmitError {
    #[error("cannot write YAML")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Unsupported(String),
}

impl ser::Error for EmitError {
    fn custom<T: std::fmt::Display>(message: T) -> Self {
        EmitError::Unsupported(message.to_string())
    }
}

/// Writes `value` as one YAML document (without a `---` line).
pub fn to_writer<W: Write, T: Serialize + ?Sized>(writer: W, value: &T) -> Result<(), EmitError> {
    let mut emitter = Emitter { out: writer };
    value.serialize(Node {
        emitter: &mut emitter,
        at: Position::Root,
    })
}

/// `value` as one YAML document.
pub fn to_string<T: Serialize + ?Sized>(value: &T) -> Result<String, EmitError> {
    let mut out = Vec::new();
    to_writer(&mut out, value)?;
    // Everything written is ASCII or copied from `&str`s whole.
    String::from_utf8(out).map_err(|err| EmitError::Unsupported(err.to_string()))
}

struct Emitter<W> {
    out: W,
}

/// Where the next node goes: what has been written on its line already.
#[derive(Clone, Copy)]
enum Position {
    /// The start of the document.
    Root,
    /// After `key:` of a mapping whose keys are at column `indent`.
    AfterKey { indent: usize },
    /// After `- ` of a sequence whose dashes are at column `indent`.
    AfterDash { indent: usize },
}

impl Position {
    /// The column of a nested mapping's keys.
    fn mapping_indent(self) -> usize {
        match self {
            Position::Root => 0,
            Position::AfterKey { indent } | Position::AfterDash { indent } => indent + 2,
        }
    }

    /// The column of a nested sequence's dashes: under a key, at the key's
    /// column (`key:\n- item`, as kubectl and libyaml write it).
    fn sequence_indent(self) -> usize {
        match self {
            Position::Root => 0,
            Position::AfterKey { indent } => indent,
            Position::AfterDash { indent } => indent + 2,
        }
    }
}

impl<W: Write> Emitter<W> {
    fn spaces(&mut self, count: usize) -> Result<(), EmitError> {
        const SPACES: &[u8; 64] = &[b' '; 64];
        let mut left = count;
        while left > 0 {
            let now = left.min(SPACES.len());
            self.out.write_all(&SPACES[..now])?;
            left -= now;
        }
        Ok(())
    }

    /// After `key:`, a scalar starts one space on.
    fn separate(&mut self, at: Position) -> Result<(), EmitError> {
        if let Position::AfterKey { .. } = at {
            self.out.write_all(b" ")?;
        }
        Ok(())
    }

    /// Writes a scalar already rendered, at `at`.
    fn scalar(&mut self, at: Position, text: &[u8]) -> Result<(), EmitError> {
        self.separate(at)?;
        self.out.write_all(text)?;
        self.out.write_all(b"\n")?;
        Ok(())
    }

    fn string(&mut self, at: Position, text: &str) -> Result<(), EmitError> {
        self.separate(at)?;
        match style(text) {
            Style::Plain => self.out.write_all(text.as_bytes())?,
            Style::SingleQuoted => write_single_quoted(&mut self.out, text)?,
            Style::DoubleQuoted => write_double_quoted(&mut self.out, text)?,
            Style::Literal => {
                // Content is indented one step beyond the node's own column.
                let indent = at.mapping_indent().max(2);
                let body = text.strip_suffix('\n');
                // `|` keeps one final line break, `|-` none.
                self.out
                    .write_all(if body.is_some() { b"|" } else { b"|-" })?;
                for line in body.unwrap_or(text).split('\n') {
                    self.out.write_all(b"\n")?;
                    if !line.is_empty() {
                        self.spaces(indent)?;
                        self.out.write_all(line.as_bytes())?;
                    }
                }
            }
        }
        self.out.write_all(b"\n")?;
        Ok(())
    }

    /// Writes a mapping key (a string), up to its colon.
    fn key(&mut self, text: &str) -> Result<(), EmitError> {
        match style(text) {
            Style::Plain => self.out.write_all(text.as_bytes())?,
            Style::SingleQuoted => write_single_quoted(&mut self.out, text)?,
            Style::Literal | Style::DoubleQuoted => write_double_quoted(&mut self.out, text)?,
        }
        self.out.write_all(b":")?;
        Ok(())
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Style {
    Plain,
    SingleQuoted,
    Literal,
    DoubleQuoted,
}

/// How `text` must be written to read back as this string and nothing else.
fn style(text: &str) -> Style {
    let printable = |c: char| c == '\n' || !(c.is_control() || is_special_unicode(c));
    if !text.chars().all(printable) {
        return Style::DoubleQuoted;
    }
    if text.contains('\n') {
        return if literal_fits(text) {
            Style::Literal
        } else {
            Style::DoubleQuoted
        };
    }
    if plain_fits(text) {
        Style::Plain
    } else {
        Style::SingleQuoted
    }
}

/// Characters YAML treats as line breaks or byte order marks, which must be
/// escaped in any scalar.
fn is_special_unicode(c: char) -> bool {
    matches!(c, '\u{85}' | '\u{2028}' | '\u{2029}' | '\u{feff}')
}

/// A literal block keeps its text exactly when no line starts with a space
/// (the first would be read as indentation), no line ends in whitespace
/// (kept, but fragile in review), and at most one line break ends it.
fn literal_fits(text: &str) -> bool {
    let body = text.strip_suffix('\n').unwrap_or(text);
    !body.is_empty()
        && !body.ends_with('\n')
        && !body.contains('\t')
        && body
            .split('\n')
            .all(|line| !line.starts_with(' ') && !line.ends_with(' '))
}

/// A plain scalar: printable ASCII, no indicator that starts or breaks
/// one, and nothing a resolver would read as null, a boolean or a number.
fn plain_fits(text: &str) -> bool {
    let bytes = text.as_bytes();
    let (Some(&first), Some(&last)) = (bytes.first(), bytes.last()) else {
        return false;
    };
    if !bytes.iter().all(|b| (0x20..0x7f).contains(b)) {
        return false;
    }
    if b"-?:,[]{}#&*!|>'\"%@` ".contains(&first) || last == b' ' || last == b':' {
        return false;
    }
    // `: ` and ` #` would end the scalar; `...` at a line's start ends a
    // document.
    if text.contains(": ") || text.contains(" #") || text.starts_with("...") {
        return false;
    }
    !resolves_to_other_type(text)
}

/// What YAML 1.1 or 1.2 resolvers read as null, a boolean, or a number
/// (integers in any base, floats, sexagesimal, `.inf`, `.nan`), or as a
/// YAML 1.1 timestamp. Conservative: a string of digits, signs, dots,
/// colons, underscores, letters of exponents and hexadecimal that starts
/// with a digit (or a sign or dot and a digit) is taken as one.
fn resolves_to_other_type(text: &str) -> bool {
    const WORDS: &[&str] = &[
        "~", "null", "true", "false", "yes", "no", "on", "off", "y", "n", ".inf", "-.inf", "+.inf",
        ".nan", "<<", "=",
    ];
    if WORDS.iter().any(|word| text.eq_ignore_ascii_case(word)) {
        return true;
    }
    let unsigned = text.trim_start_matches(['+', '-']);
    let unsigned = unsigned.strip_prefix('.').unwrap_or(unsigned);
    let Some(first) = unsigned.bytes().next() else {
        return false;
    };
    first.is_ascii_digit()
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+-.:_ ".contains(&b))
}

fn write_single_quoted(out: &mut impl Write, text: &str) -> Result<(), EmitError> {
    out.write_all(b"'")?;
    let mut rest = text;
    while let Some(at) = rest.find('\'') {
        out.write_all(&rest.as_bytes()[..=at])?;
        out.write_all(b"'")?;
        rest = &rest[at + 1..];
    }
    out.write_all(rest.as_bytes())?;
    out.write_all(b"'")?;
    Ok(())
}

fn write_double_quoted(out: &mut impl Write, text: &str) -> Result<(), EmitError> {
    out.write_all(b"\"")?;
    for c in text.chars() {
        match c {
            '"' => out.write_all(b"\\\"")?,
            '\\' => out.write_all(b"\\\\")?,
            '\n' => out.write_all(b"\\n")?,
            '\t' => out.write_all(b"\\t")?,
            '\r' => out.write_all(b"\\r")?,
            c if c.is_control() || is_special_unicode(c) => {
                let code = c as u32;
                if code <= 0xff {
                    write!(out, "\\x{code:02X}")?;
                } else {
                    write!(out, "\\u{code:04X}")?;
                }
            }
            c => {
                let mut buffer = [0; 4];
                out.write_all(c.encode_utf8(&mut buffer).as_bytes())?;
            }
        }
    }
    out.write_all(b"\"")?;
    Ok(())
}

/// One node to serialize at a position.
struct Node<'e, W> {
    emitter: &'e mut Emitter<W>,
    at: Position,
}

/// A mapping or sequence being written: its children's position, and
/// whether one was written (an empty one is `{}` or `[]`).
struct Collection<'e, W> {
    emitter: &'e mut Emitter<W>,
    at: Position,
    written: bool,
    mapping: bool,
}

impl<'e, W: Write> Collection<'e, W> {
    fn new(emitter: &'e mut Emitter<W>, at: Position, mapping: bool) -> Self {
        Self {
            emitter,
            at,
            written: false,
            mapping,
        }
    }

    /// Starts the next child's line: the first child of a node after `- `
    /// shares its line; under a key it starts a new one.
    fn next_line(&mut self) -> Result<usize, EmitError> {
        let indent = if self.mapping {
            self.at.mapping_indent()
        } else {
            self.at.sequence_indent()
        };
        match (self.written, self.at) {
            (false, Position::AfterDash { .. } | Position::Root) => {}
            (false, Position::AfterKey { .. }) => {
                self.emitter.out.write_all(b"\n")?;
                self.emitter.spaces(indent)?;
            }
            (true, _) => self.emitter.spaces(indent)?,
        }
        self.written = true;
        Ok(indent)
    }

    fn element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), EmitError> {
        let indent = self.next_line()?;
        self.emitter.out.write_all(b"-")?;
        self.emitter.out.write_all(b" ")?;
        value.serialize(Node {
            emitter: self.emitter,
            at: Position::AfterDash { indent },
        })
    }

    fn entry<V: Serialize + ?Sized>(&mut self, key: &str, value: &V) -> Result<(), EmitError> {
        let indent = self.next_line()?;
        self.emitter.key(key)?;
        value.serialize(Node {
            emitter: self.emitter,
            at: Position::AfterKey { indent },
        })
    }

    fn finish(self) -> Result<(), EmitError> {
        if !self.written {
            let empty: &[u8] = if self.mapping { b"{}" } else { b"[]" };
            self.emitter.scalar(self.at, empty)?;
        }
        Ok(())
    }
}

macro_rules! integer {
    ($($method:ident: $type:ty),*) => {$(
        fn $method(self, value: $type) -> Result<(), EmitError> {
            let mut digits = itoa::Buffer::new();
            self.emitter.scalar(self.at, digits.format(value).as_bytes())
        }
    )*};
}

impl<'e, W: Write> ser::Serializer for Node<'e, W> {
    type Ok = ();
    type Error = EmitError;
    type SerializeSeq = Collection<'e, W>;
    type SerializeTuple = Collection<'e, W>;
    type SerializeTupleStruct = Collection<'e, W>;
    type SerializeTupleVariant = ser::Impossible<(), EmitError>;
    type SerializeMap = MapWriter<'e, W>;
    type SerializeStruct = Collection<'e, W>;
    type SerializeStructVariant = ser::Impossible<(), EmitError>;

    integer!(serialize_i8: i8, serialize_i16: i16, serialize_i32: i32, serialize_i64: i64,
        serialize_i128: i128, serialize_u8: u8, serialize_u16: u16, serialize_u32: u32,
        serialize_u64: u64, serialize_u128: u128);

    fn serialize_bool(self, value: bool) -> Result<(), EmitError> {
        self.emitter
            .scalar(self.at, if value { b"true" } else { b"false" })
    }

    fn serialize_f32(self, value: f32) -> Result<(), EmitError> {
        self.serialize_f64(f64::from(value))
    }

    fn serialize_f64(self, value: f64) -> Result<(), EmitError> {
        let text = if value.is_nan() {
            ".nan".to_string()
        } else if value.is_infinite() {
            if value > 0.0 { ".inf" } else { "-.inf" }.to_string()
        } else {
            let text = value.to_string();
            // `1` would read back as an integer.
            if text.contains(['.', 'e', 'E']) {
                text
            } else {
                format!("{text}.0")
            }
        };
        self.emitter.scalar(self.at, text.as_bytes())
    }

    fn serialize_char(self, value: char) -> Result<(), EmitError> {
        self.serialize_str(value.encode_utf8(&mut [0; 4]))
    }

    fn serialize_str(self, value: &str) -> Result<(), EmitError> {
        self.emitter.string(self.at, value)
    }

    fn serialize_bytes(self, value: &[u8]) -> Result<(), EmitError> {
        use ser::SerializeSeq as _;
        let mut seq = self.serialize_seq(Some(value.len()))?;
        for byte in value {
            seq.serialize_element(byte)?;
        }
        seq.end()
    }

    fn serialize_none(self) -> Result<(), EmitError> {
        self.serialize_unit()
    }

    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<(), EmitError> {
        value.serialize(self)
    }

    fn serialize_unit(self) -> Result<(), EmitError> {
        self.emitter.scalar(self.at, b"null")
    }

    fn serialize_unit_struct(self, _name: &'static str) -> Result<(), EmitError> {
        self.serialize_unit()
    }

    fn serialize_unit_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
    ) -> Result<(), EmitError> {
        self.serialize_str(variant)
    }

    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        value: &T,
    ) -> Result<(), EmitError> {
        value.serialize(self)
    }

    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        value: &T,
    ) -> Result<(), EmitError> {
        let mut mapping = Collection::new(self.emitter, self.at, true);
        mapping.entry(variant, value)?;
        mapping.finish()
    }

    fn serialize_seq(self, _len: Option<usize>) -> Result<Collection<'e, W>, EmitError> {
        Ok(Collection::new(self.emitter, self.at, false))
    }

    fn serialize_tuple(self, len: usize) -> Result<Collection<'e, W>, EmitError> {
        self.serialize_seq(Some(len))
    }

    fn serialize_tuple_struct(
        self,
        _name: &'static str,
        len: usize,
    ) -> Result<Collection<'e, W>, EmitError> {
        self.serialize_seq(Some(len))
    }

    fn serialize_tuple_variant(
        self,
        _name: &'static str,
        _index: u32,
        _variant: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeTupleVariant, EmitError> {
        Err(EmitError::Unsupported(
            "tuple variants are not written as YAML".into(),
        ))
    }

    fn serialize_map(self, _len: Option<usize>) -> Result<MapWriter<'e, W>, EmitError> {
        Ok(MapWriter {
            collection: Collection::new(self.emitter, self.at, true),
            key: None,
        })
    }

    fn serialize_struct(
        self,
        _name: &'static str,
        _len: usize,
    ) -> Result<Collection<'e, W>, EmitError> {
        Ok(Collection::new(self.emitter, self.at, true))
    }

    fn serialize_struct_variant(
        self,
        _name: &'static str,
        _index: u32,
        _variant: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeStructVariant, EmitError> {
        Err(EmitError::Unsupported(
            "struct variants are not written as YAML".into(),
        ))
    }
}

/// Sequences, tuples and tuple structs are all `- item` lists.
macro_rules! sequence {
    ($($trait:ident::$method:ident),*) => {$(
        impl<W: Write> ser::$trait for Collection<'_, W> {
            type Ok = ();
            type Error = EmitError;

            fn $method<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), EmitError> {
                self.element(value)
            }

            fn end(self) -> Result<(), EmitError> {
                self.finish()
            }
        }
    )*};
}

sequence!(
    SerializeSeq::serialize_element,
    SerializeTuple::serialize_element,
    SerializeTupleStruct::serialize_field
);

impl<W: Write> ser::SerializeStruct for Collection<'_, W> {
    type Ok = ();
    type Error = EmitError;

    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), EmitError> {
        self.entry(key, value)
    }

    fn end(self) -> Result<(), EmitError> {
        self.finish()
    }
}

/// A mapping with keys of its own (label maps): each key is rendered to a
/// string first, since only string keys are written.
struct MapWriter<'e, W> {
    collection: Collection<'e, W>,
    key: Option<String>,
}

impl<W: Write> ser::SerializeMap for MapWriter<'_, W> {
    type Ok = ();
    type Error = EmitError;

    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), EmitError> {
        self.key = Some(key.serialize(KeyText)?);
        Ok(())
    }

    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), EmitError> {
        let key = self
            .key
            .take()
            .ok_or_else(|| EmitError::Unsupported("a map value without its key".into()))?;
        self.collection.entry(&key, value)
    }

    fn serialize_entry<K: Serialize + ?Sized, V: Serialize + ?Sized>(
        &mut self,
        key: &K,
        value: &V,
    ) -> Result<(), EmitError> {
        let key = key.serialize(KeyText)?;
        self.collection.entry(&key, value)
    }

    fn end(self) -> Result<(), EmitError> {
        self.collection.finish()
    }
}

/// A mapping key as text: strings only (a number key would read back as a
/// number; policies have none).
struct KeyText;

/// `KeyText`'s refusal of every scalar that is not a string.
macro_rules! refuse_key {
    ($($method:ident: $type:ty),*) => {$(
        fn $method(self, _: $type) -> Result<String, EmitError> {
            Err(not_a_string_key())
        }
    )*};
}

impl ser::Serializer for KeyText {
    type Ok = String;
    type Error = EmitError;
    type SerializeSeq = ser::Impossible<String, EmitError>;
    type SerializeTuple = ser::Impossible<String, EmitError>;
    type SerializeTupleStruct = ser::Impossible<String, EmitError>;
    type SerializeTupleVariant = ser::Impossible<String, EmitError>;
    type SerializeMap = ser::Impossible<String, EmitError>;
    type SerializeStruct = ser::Impossible<String, EmitError>;
    type SerializeStructVariant = ser::Impossible<String, EmitError>;

    fn serialize_str(self, value: &str) -> Result<String, EmitError> {
        Ok(value.to_string())
    }

    fn serialize_unit_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
    ) -> Result<String, EmitError> {
        Ok(variant.to_string())
    }

    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        value: &T,
    ) -> Result<String, EmitError> {
        value.serialize(self)
    }

    fn serialize_char(self, value: char) -> Result<String, EmitError> {
        Ok(value.to_string())
    }

    refuse_key! {
        serialize_bool: bool, serialize_i8: i8, serialize_i16: i16, serialize_i32: i32,
        serialize_i64: i64, serialize_u8: u8, serialize_u16: u16, serialize_u32: u32,
        serialize_u64: u64, serialize_f32: f32, serialize_f64: f64,
        serialize_bytes: &[u8], serialize_unit_struct: &'static str
    }

    fn serialize_none(self) -> Result<String, EmitError> {
        Err(not_a_string_key())
    }

    fn serialize_some<T: Serialize + ?Sized>(self, _: &T) -> Result<String, EmitError> {
        Err(not_a_string_key())
    }

    fn serialize_unit(self) -> Result<String, EmitError> {
        Err(not_a_string_key())
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: &T,
    ) -> Result<String, EmitError> {
        Err(not_a_string_key())
    }
    fn serialize_seq(self, _: Option<usize>) -> Result<Self::SerializeSeq, EmitError> {
        Err(not_a_string_key())
    }
    fn serialize_tuple(self, _: usize) -> Result<Self::SerializeTuple, EmitError> {
        Err(not_a_string_key())
    }
    fn serialize_tuple_struct(
        self,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleStruct, EmitError> {
        Err(not_a_string_key())
    }
    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleVariant, EmitError> {
        Err(not_a_string_key())
    }
    fn serialize_map(self, _: Option<usize>) -> Result<Self::SerializeMap, EmitError> {
        Err(not_a_string_key())
    }
    fn serialize_struct(
        self,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeStruct, EmitError> {
        Err(not_a_string_key())
    }
    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeStructVariant, EmitError> {
        Err(not_a_string_key())
    }
}

fn not_a_string_key() -> EmitError {
    EmitError::Unsupported("only string keys are written as YAML mapping keys".into())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde::Serialize;
    use serde_norway::Value;

    use super::*;

    /// Strings every rule of `style` is about.
    const TRICKY: &[&str] = &[
        "",
        " ",
        "plain",
        "kube-system",
        "kubernetes.io/metadata.name",
        "10.0.0.1/32",
        "fd00::1/128",
        "8080",
        "-1",
        "+1",
        "1.5",
        ".5",
        "1e3",
        "0x1F",
        "0o17",
        "1_000",
        "1:20",
        "2026-11-26",
        "2026-11-26T05:11:15Z",
        "null",
        "Null",
        "~",
        "true",
        "False",
        "yes",
        "No",
        "on",
        "OFF",
        "y",
        "N",
        ".inf",
        "-.Inf",
        ".NaN",
        "<<",
        "=",
        "a: b",
        "a:b",
        "a #b",
        "a#b",
        "#a",
        "a:",
        ":a",
        "- a",
        "-a",
        "---",
        "...",
        "...a",
        "? a",
        "[a]",
        "{a}",
        "a, b",
        "*a",
        "&a",
        "!a",
        "|a",
        ">a",
        "'a'",
        "\"a\"",
        "%a",
        "@a",
        "`a",
        " a",
        "a ",
        "it's",
        "a\\b",
        "tab\there",
        "line\nbreak",
        "two\n\nlines",
        "ends\n",
        "ends\n\n",
        "\nstarts",
        " indented\nx",
        "x\n indented",
        "trailing \nx",
        "carriage\r\nreturn",
        "bell\u{7}",
        "nul\u{0}",
        "é",
        "naïve: yes",
        "\u{2028}",
        "\u{feff}bom",
        "emoji 🚀",
        "\u{85}",
        "ingress[0]: shop/loadgen tcp/8080 first 2026-11-26T05:11:13Z connections 3",
        "ingress[0]: a\negress[0]: b",
    ];

    fn reads_back<T: Serialize>(value: &T) {
        let ours = to_string(value).unwrap();
        let theirs = serde_norway::to_string(value).unwrap();
        let ours_read: Value = serde_norway::from_str(&ours)
            .unwrap_or_else(|err| panic!("our YAML does not parse ({err}):\n{ours}"));
        let theirs_read: Value = serde_norway::from_str(&theirs).unwrap();
        assert_eq!(
            ours_read, theirs_read,
            "ours:\n{ours}\nserde_norway's:\n{theirs}"
        );
    }

    #[test]
    fn every_tricky_string_reads_back_as_itself_in_every_position() {
        for text in TRICKY {
            reads_back(text);
            reads_back(&vec![*text, "after"]);
            reads_back(&BTreeMap::from([(*text, *text), ("z", "after")]));
            reads_back(&vec![BTreeMap::from([("k", vec![*text])])]);
            reads_back(&BTreeMap::from([("k", BTreeMap::from([("k", *text)]))]));
        }
    }

    /// A deterministic stream of strings over an alphabet of YAML's
    /// indicators, digits, spaces and line breaks.
    #[test]
    fn random_strings_read_back_as_themselves() {
        let alphabet: Vec<char> = "ab01.:-+#'\" \n\t,[]{}?*&!|>%@`~eEx_/\\é\r"
            .chars()
            .collect();
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..20_000 {
            let len = (next() % 9) as usize;
            let text: String = (0..len)
                .map(|_| alphabet[(next() % alphabet.len() as u64) as usize])
                .collect();
            reads_back(&BTreeMap::from([(text.as_str(), vec![text.as_str()])]));
        }
    }

    #[test]
    fn values_of_every_kind_read_back() {
        #[derive(Serialize)]
        struct Everything {
            number: u16,
            negative: i64,
            float: f64,
            whole_float: f64,
            flag: bool,
            missing: Option<u8>,
            present: Option<String>,
            empty_map: BTreeMap<String, String>,
            empty_list: Vec<u8>,
            nested: Vec<Vec<u8>>,
            maps_in_list: Vec<BTreeMap<String, Vec<String>>>,
            unit: (),
            kind: Kind,
            int_or_string: Vec<k8s_openapi::apimachinery::pkg::util::intstr::IntOrString>,
        }
        #[derive(Serialize)]
        enum Kind {
            Ingress,
        }
        use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
        reads_back(&Everything {
            number: 8080,
            negative: -3,
            float: 1.5,
            whole_float: 2.0,
            flag: true,
            missing: None,
            present: Some("x".into()),
            empty_map: BTreeMap::new(),
            empty_list: Vec::new(),
            nested: vec![vec![1, 2], vec![], vec![3]],
            maps_in_list: vec![
                BTreeMap::new(),
                BTreeMap::from([("a".into(), vec![]), ("b".into(), vec!["c".into()])]),
            ],
            unit: (),
            kind: Kind::Ingress,
            int_or_string: vec![IntOrString::Int(53), IntOrString::String("dns".into())],
        });
    }

    #[test]
    fn what_yaml_1_1_reads_as_another_type_is_quoted() {
        // kubectl's parser reads these as booleans, numbers or null.
        for text in [
            "yes", "no", "on", "off", "y", "n", "1:20", "0o17", "1_000", "~", "<<",
        ] {
            assert_ne!(style(text), Style::Plain, "{text}");
        }
        for text in [
            "web",
            "kube-system",
            "10.0.0.1/32",
            "app.kubernetes.io/name",
            "v1",
        ] {
            assert_eq!(style(text), Style::Plain, "{text}");
        }
    }

    #[test]
    fn block_style_is_kubectls() {
        let policy = serde_json::json!({
            "spec": {
                "podSelector": {},
                "egress": [{"ports": [{"port": 53}], "to": [{"podSelector": {"matchLabels": {"app": "x"}}}]}],
                "policyTypes": ["Egress"],
            },
            "metadata": {"annotations": {"evidence": "a: 1\nb: 2"}},
        });
        assert_eq!(
            to_string(&policy).unwrap(),
            "metadata:\n  annotations:\n    evidence: |-\n      a: 1\n      b: 2\n\
             spec:\n  egress:\n  - ports:\n    - port: 53\n    to:\n    - podSelector:\n        \
             matchLabels:\n          app: x\n  podSelector: {}\n  policyTypes:\n  - Egress\n"
        );
    }
}
