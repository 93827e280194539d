//! Reading a binary flow record's fields: postcard's encoding (varints,
//! strings as length and bytes, enum variants by number) read field by
//! field. A week's log is millions of records, and postcard's own reader,
//! going through serde per field and per byte of an address, cost more
//! than everything `graph build` then does with a record
//! (docs/performance.md, "Reading the binary log by hand"). Writing stays
//! postcard's: `binary.rs`'s tests pin the bytes both ways.

use std::{
    hash::BuildHasher as _,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    sync::Arc,
};

use hashbrown::HashTable;

use crate::model::{Address, Basis, Handshake, Side};

/// Why a record's body is no flow record.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WireError {
    #[error("it ends inside its {0}")]
    Truncated(&'static str),
    #[error("its {0} is a number longer than the field holds")]
    Overflow(&'static str),
    #[error("its {field} is variant {index}, which this agent does not know")]
    Variant { field: &'static str, index: u64 },
    #[error("its {0} is no UTF-8 text")]
    NotText(&'static str),
}

/// The variants of the model's enums in their order in the format: a
/// variant is written as its number here (tested against postcard).
pub const SIDES: [Side; 3] = [Side::Local, Side::Remote, Side::Unknown];
pub const BASES: [Basis; 6] = [
    Basis::TcpSyn,
    Basis::EphemeralPort,
    Basis::WellKnownPort,
    Basis::FirstPacket,
    Basis::Undecided,
    Basis::HttpRequest,
];
pub const HANDSHAKES: [Handshake; 5] = [
    Handshake::Established,
    Handshake::Refused,
    Handshake::Unanswered,
    Handshake::OneWay,
    Handshake::Unknown,
];

/// `bytes` as text, if they are UTF-8.
pub fn text<'a>(bytes: &'a [u8], field: &'static str) -> Result<&'a str, WireError> {
    std::str::from_utf8(bytes).map_err(|_| WireError::NotText(field))
}

/// The texts a log repeats in most of its records (cgroup paths), each
/// held once and handed out shared: a week of a node's log names a few
/// thousand cgroups millions of times, and a copy of each for each record
/// was most of what reading a record allocated. Bounded: past
/// [`SharedTexts::MOST`] it starts over.
#[derive(Default)]
pub struct SharedTexts {
    texts: HashTable<Arc<str>>,
    hashing: foldhash::fast::RandomState,
}

impl SharedTexts {
    const MOST: usize = 1 << 16;

    /// The shared copy of `bytes`, checked to be UTF-8 the first time.
    pub fn get(&mut self, bytes: &[u8], field: &'static str) -> Result<Arc<str>, WireError> {
        let hash = self.hashing.hash_one(bytes);
        if let Some(known) = self.texts.find(hash, |known| known.as_bytes() == bytes) {
            return Ok(known.clone());
        }
        if self.texts.len() >= Self::MOST {
            self.texts.clear();
        }
        let shared: Arc<str> = text(bytes, field)?.into();
        let hashing = &self.hashing;
        self.texts.insert_unique(hash, shared.clone(), |known| {
            hashing.hash_one(known.as_bytes())
        });
        Ok(shared)
    }
}

/// A record's body, read from the front; each read names the field it is
/// for, so that an error says which.
pub struct WireReader<'a> {
    rest: &'a [u8],
}

impl<'a> WireReader<'a> {
    pub fn new(body: &'a [u8]) -> Self {
        Self { rest: body }
    }

    /// The bytes not read yet.
    pub fn rest(&self) -> &'a [u8] {
        self.rest
    }

    pub fn byte(&mut self, field: &'static str) -> Result<u8, WireError> {
        let (&byte, rest) = self.rest.split_first().ok_or(WireError::Truncated(field))?;
        self.rest = rest;
        Ok(byte)
    }

    fn bytes(&mut self, length: usize, field: &'static str) -> Result<&'a [u8], WireError> {
        if length > self.rest.len() {
            return Err(WireError::Truncated(field));
        }
        let (bytes, rest) = self.rest.split_at(length);
        self.rest = rest;
        Ok(bytes)
    }

    fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], WireError> {
        let bytes = self.bytes(N, field)?;
        Ok(bytes.try_into().expect("N bytes taken"))
    }

    /// An unsigned LEB128 number of at most `BITS` bits, as postcard writes
    /// every integer wider than a byte.
    #[inline]
    fn varint<const BITS: u32>(&mut self, field: &'static str) -> Result<u64, WireError> {
        let mut value = 0u64;
        let mut shift = 0;
        loop {
            let byte = self.byte(field)?;
            let payload = u64::from(byte & 0x7f);
            // The last byte a number of `BITS` can take holds fewer.
            let room = BITS - shift;
            if room < 7 && payload >> room != 0 {
                return Err(WireError::Overflow(field));
            }
            value |= payload << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
            shift += 7;
            if shift >= BITS {
                return Err(WireError::Overflow(field));
            }
        }
    }

    pub fn u64(&mut self, field: &'static str) -> Result<u64, WireError> {
        self.varint::<64>(field)
    }

    pub fn u16(&mut self, field: &'static str) -> Result<u16, WireError> {
        Ok(self.varint::<16>(field)? as u16)
    }

    /// A length: as postcard writes a `usize`.
    pub fn length(&mut self, field: &'static str) -> Result<usize, WireError> {
        usize::try_from(self.varint::<64>(field)?).map_err(|_| WireError::Overflow(field))
    }

    pub fn str(&mut self, field: &'static str) -> Result<&'a str, WireError> {
        let length = self.length(field)?;
        text(self.bytes(length, field)?, field)
    }

    pub fn option_str(&mut self, field: &'static str) -> Result<Option<&'a str>, WireError> {
        match self.option_text_bytes(field)? {
            Some(bytes) => text(bytes, field).map(Some),
            None => Ok(None),
        }
    }

    /// An optional text's bytes, not yet checked to be UTF-8.
    pub fn option_text_bytes(
        &mut self,
        field: &'static str,
    ) -> Result<Option<&'a [u8]>, WireError> {
        match self.byte(field)? {
            0 => Ok(None),
            1 => {
                let length = self.length(field)?;
                self.bytes(length, field).map(Some)
            }
            tag => Err(WireError::Variant {
                field,
                index: u64::from(tag),
            }),
        }
    }

    /// One of `variants`, by its number.
    pub fn variant<T: Copy>(
        &mut self,
        variants: &[T],
        field: &'static str,
    ) -> Result<T, WireError> {
        let index = self.varint::<32>(field)?;
        usize::try_from(index)
            .ok()
            .and_then(|index| variants.get(index).copied())
            .ok_or(WireError::Variant { field, index })
    }

    /// An address: the IP's family (0 IPv4, 1 IPv6), its bytes, the port.
    pub fn address(&mut self, field: &'static str) -> Result<Address, WireError> {
        let ip = match self.varint::<32>(field)? {
            0 => IpAddr::V4(Ipv4Addr::from(self.array::<4>(field)?)),
            1 => IpAddr::V6(Ipv6Addr::from(self.array::<16>(field)?)),
            index => return Err(WireError::Variant { field, index }),
        };
        let port = self.u16(field)?;
        Ok(Address { ip, port })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn postcard<T: serde::Serialize>(value: &T) -> Vec<u8> {
        postcard::to_allocvec(value).unwrap()
    }

    #[test]
    fn variants_are_numbered_as_postcard_writes_them() {
        for (index, side) in SIDES.iter().enumerate() {
            assert_eq!(postcard(side), [index as u8], "{side:?}");
        }
        for (index, basis) in BASES.iter().enumerate() {
            assert_eq!(postcard(basis), [index as u8], "{basis:?}");
        }
        for (index, handshake) in HANDSHAKES.iter().enumerate() {
            assert_eq!(postcard(handshake), [index as u8], "{handshake:?}");
        }
    }

    #[test]
    fn numbers_read_as_postcard_writes_them_and_no_wider() {
        let mut values = vec![0, 1, 127, 128, 300, u64::from(u32::MAX), u64::MAX];
        // Every length, and each length's largest number.
        values.extend((1..64).flat_map(|bits| [1u64 << bits, (1u64 << bits) - 1]));
        for value in values {
            // Alone, and before other bytes: the reader stops at the
            // number's last byte either way.
            let alone = postcard(&value);
            let followed = [&alone[..], &[0x80; 9]].concat();
            for bytes in [&alone, &followed] {
                let mut reader = WireReader::new(bytes);
                assert_eq!(reader.u64("n"), Ok(value), "{value}");
                assert_eq!(reader.rest(), &bytes[alone.len()..]);
                if let Ok(narrow) = u16::try_from(value) {
                    assert_eq!(postcard(&narrow), alone);
                    assert_eq!(WireReader::new(bytes).u16("n"), Ok(narrow));
                } else {
                    assert_eq!(
                        WireReader::new(bytes).u16("n"),
                        Err(WireError::Overflow("n")),
                        "{value}"
                    );
                }
            }
        }
        // A u16 written in four bytes, even of a small number: postcard
        // writes it in three at most.
        assert_eq!(
            WireReader::new(&[0x81, 0x80, 0x80, 0x00, 0, 0, 0, 0]).u16("n"),
            Err(WireError::Overflow("n"))
        );
        // Eleven bytes, or a tenth byte holding more than u64's last bit.
        let long = [0xff; 10]
            .iter()
            .chain(&[0x01])
            .copied()
            .collect::<Vec<_>>();
        assert_eq!(
            WireReader::new(&long).u64("n"),
            Err(WireError::Overflow("n"))
        );
        let over = [0xff; 9].iter().chain(&[0x02]).copied().collect::<Vec<_>>();
        assert_eq!(
            WireReader::new(&over).u64("n"),
            Err(WireError::Overflow("n"))
        );
        assert_eq!(
            WireReader::new(&[0x80, 0x80]).u64("n"),
            Err(WireError::Truncated("n"))
        );
    }

    #[test]
    fn a_text_seen_again_is_the_same_copy_and_bad_text_is_refused() {
        let mut shared = SharedTexts::default();
        let first = shared.get(b"/kubepods/pod1/c", "cgroup").unwrap();
        let again = shared.get(b"/kubepods/pod1/c", "cgroup").unwrap();
        let other = shared.get(b"/kubepods/pod2/c", "cgroup").unwrap();
        assert!(Arc::ptr_eq(&first, &again));
        assert_eq!(&*other, "/kubepods/pod2/c");
        assert_eq!(
            shared.get(&[0xff, 0xfe], "cgroup"),
            Err(WireError::NotText("cgroup"))
        );
        // Bounded: past the most it holds, it starts over.
        for number in 0..SharedTexts::MOST {
            shared
                .get(format!("/{number}").as_bytes(), "cgroup")
                .unwrap();
        }
        assert!(shared.texts.len() <= SharedTexts::MOST);
        let later = shared.get(b"/kubepods/pod1/c", "cgroup").unwrap();
        assert_eq!(later, first);
    }

    #[test]
    fn addresses_and_texts_read_as_postcard_writes_them() {
        let addresses = [
            Address {
                ip: "10.244.0.5".parse().unwrap(),
                port: 41000,
            },
            Address {
                ip: "fd00::5".parse().unwrap(),
                port: 0,
            },
        ];
        for address in addresses {
            let bytes = postcard(&address);
            let mut reader = WireReader::new(&bytes);
            assert_eq!(reader.address("a"), Ok(address));
            assert!(reader.rest().is_empty());
        }
        for text in [None, Some(""), Some("/kubepods/pod1/c")] {
            let bytes = postcard(&text);
            assert_eq!(WireReader::new(&bytes).option_str("t"), Ok(text));
        }
        assert_eq!(
            WireReader::new(&[2, 10, 0, 0, 1]).address("a"),
            Err(WireError::Variant {
                field: "a",
                index: 2
            })
        );
        assert_eq!(
            WireReader::new(&[1, 2, 0xff, 0xfe]).option_str("t"),
            Err(WireError::NotText("t"))
        );
        assert_eq!(
            WireReader::new(&[1, 9, b'a']).option_str("t"),
            Err(WireError::Truncated("t"))
        );
        assert_eq!(
            WireReader::new(&[3]).variant(&SIDES, "side"),
            Err(WireError::Variant {
                field: "side",
                index: 3
            })
        );
    }
}
