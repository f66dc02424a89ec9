//! Agent instance uids: 16 bytes on the wire (shown as a UUID), or a 26-character ULID string
//! from agents older than OpAMP 0.10, decoded to the same 16 bytes.

use std::fmt;
use std::str::FromStr;
use uuid::Uuid;

#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct InstanceUid([u8; 16]);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UidError {
    #[error("instance_uid must be 16 bytes (or a 26-character ULID), got {0} bytes")]
    Length(usize),
    #[error("instance_uid of 26 bytes is not a valid ULID")]
    BadUlid,
}

const CROCKFORD: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

fn crockford_value(c: u8) -> Option<u8> {
    let c = c.to_ascii_uppercase();
    let c = match c {
        b'I' | b'L' => b'1',
        b'O' => b'0',
        other => other,
    };
    CROCKFORD.iter().position(|&x| x == c).map(|p| p as u8)
}

impl InstanceUid {
    pub fn from_bytes(bytes: [u8; 16]) -> InstanceUid {
        InstanceUid(bytes)
    }

    pub fn new_v7() -> InstanceUid {
        InstanceUid(*Uuid::now_v7().as_bytes())
    }

    /// The uid an agent sent: 16 raw bytes, or a legacy ULID string.
    pub fn parse(bytes: &[u8]) -> Result<InstanceUid, UidError> {
        match bytes.len() {
            16 => Ok(InstanceUid(bytes.try_into().expect("length checked"))),
            26 => Self::from_ulid(bytes).ok_or(UidError::BadUlid),
            n => Err(UidError::Length(n)),
        }
    }

    fn from_ulid(text: &[u8]) -> Option<InstanceUid> {
        // 26 base-32 digits carry 130 bits; the first digit may only use its low 3 bits.
        let mut value: u128 = 0;
        for (i, &c) in text.iter().enumerate() {
            let digit = crockford_value(c)?;
            if i == 0 && digit > 7 {
                return None;
            }
            value = (value << 5) | u128::from(digit);
        }
        Some(InstanceUid(value.to_be_bytes()))
    }

    pub fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }

    pub fn uuid(&self) -> Uuid {
        Uuid::from_bytes(self.0)
    }
}

impl fmt::Display for InstanceUid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.uuid().hyphenated())
    }
}

impl fmt::Debug for InstanceUid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "InstanceUid({self})")
    }
}

impl FromStr for InstanceUid {
    type Err = uuid::Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Uuid::parse_str(s).map(|u| InstanceUid(*u.as_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sixteen_bytes_are_taken_as_they_are() {
        let uid = InstanceUid::parse(&[7u8; 16]).unwrap();
        assert_eq!(uid.as_bytes(), &[7u8; 16]);
        assert_eq!(uid.to_string(), "07070707-0707-0707-0707-070707070707");
    }

    #[test]
    fn ulids_decode_to_their_128_bits() {
        // 01ARZ3NDEKTSV4RRFFQ69G5FAV is the canonical example of the ULID specification.
        let uid = InstanceUid::parse(b"01ARZ3NDEKTSV4RRFFQ69G5FAV").unwrap();
        assert_eq!(uid.to_string(), "01563e3a-b5d3-d676-4c61-efb99302bd5b");
        assert_eq!(
            InstanceUid::parse(b"01arz3ndektsv4rrffq69g5fav").unwrap(),
            uid
        );
        assert_eq!(
            InstanceUid::parse(b"81ARZ3NDEKTSV4RRFFQ69G5FAV"),
            Err(UidError::BadUlid)
        );
        assert_eq!(
            InstanceUid::parse(b"01ARZ3NDEKTSV4RRFFQ69G5FA!"),
            Err(UidError::BadUlid)
        );
    }

    #[test]
    fn other_lengths_are_refused() {
        assert_eq!(InstanceUid::parse(&[1, 2, 3]), Err(UidError::Length(3)));
        assert_eq!(InstanceUid::parse(&[]), Err(UidError::Length(0)));
    }
}
