//! A request body held as shared pieces: what we rendered, then what we carry as received.
//!
//! A large-mode CPIM document is a few hundred octets of headers we write followed by the
//! mail's MIME body as it arrived. [`Body`] keeps the two apart, the body as a slice of
//! the received mail ([`Bytes::slice_ref`]), so a 10 MB mail is not copied into a second
//! 10 MB document: the MSRP chunks are cut from the pieces ([`Body::slice`]), and only a
//! chunk that spans both is assembled (at most one chunk's octets).

use std::fmt;

use bytes::Bytes;

/// The octets of a body: `head` followed by `tail`.
#[derive(Clone, Default)]
pub struct Body {
    head: Bytes,
    tail: Bytes,
}

impl Body {
    /// `head` then `tail`, neither copied.
    pub fn pieces(head: impl Into<Bytes>, tail: Bytes) -> Body {
        Body {
            head: head.into(),
            tail,
        }
    }

    pub fn len(&self) -> usize {
        self.head.len() + self.tail.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The octets from `range`: shared when they lie in one piece, copied (only they)
    /// when they span both.
    pub fn slice(&self, range: std::ops::Range<usize>) -> Bytes {
        let h = self.head.len();
        if range.end <= h {
            self.head.slice(range)
        } else if range.start >= h {
            self.tail.slice(range.start - h..range.end - h)
        } else {
            let mut out = Vec::with_capacity(range.len());
            out.extend_from_slice(&self.head[range.start..]);
            out.extend_from_slice(&self.tail[..range.end - h]);
            out.into()
        }
    }

    /// The whole body in one buffer: shared when it is one piece, else a copy.
    pub fn to_bytes(&self) -> Bytes {
        if self.tail.is_empty() {
            self.head.clone()
        } else if self.head.is_empty() {
            self.tail.clone()
        } else {
            self.slice(0..self.len())
        }
    }

    /// The whole body copied into a `Vec`.
    pub fn to_vec(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.len());
        out.extend_from_slice(&self.head);
        out.extend_from_slice(&self.tail);
        out
    }

    /// The pieces in order (either may be empty).
    pub fn as_slices(&self) -> [&[u8]; 2] {
        [&self.head, &self.tail]
    }
}

impl From<Bytes> for Body {
    fn from(b: Bytes) -> Body {
        Body {
            head: b,
            tail: Bytes::new(),
        }
    }
}

impl From<Vec<u8>> for Body {
    fn from(v: Vec<u8>) -> Body {
        Bytes::from(v).into()
    }
}

impl From<&'static [u8]> for Body {
    fn from(s: &'static [u8]) -> Body {
        Bytes::from_static(s).into()
    }
}

/// Equal when the octets are, however they are split.
impl PartialEq for Body {
    fn eq(&self, other: &Body) -> bool {
        self.len() == other.len() && {
            let a = self.head.iter().chain(self.tail.iter());
            a.eq(other.head.iter().chain(other.tail.iter()))
        }
    }
}

impl Eq for Body {}

/// Like the `Debug` of one [`Bytes`] holding the octets.
impl fmt::Debug for Body {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.to_bytes(), f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slices_share_a_piece_and_copy_only_across_the_seam() {
        let tail = Bytes::from_static(b"0123456789");
        let body = Body::pieces(b"head:".to_vec(), tail.clone());
        assert_eq!(body.len(), 15);
        assert_eq!(body.to_vec(), b"head:0123456789");
        assert_eq!(&body.slice(0..3)[..], b"hea");
        assert_eq!(&body.slice(3..8)[..], b"d:012");
        let in_tail = body.slice(7..12);
        assert_eq!(&in_tail[..], b"23456");
        assert_eq!(in_tail.as_ptr(), tail[2..].as_ptr(), "shared, not copied");
        assert_eq!(&body.slice(15..15)[..], b"");
        assert_eq!(body, Body::from(b"head:0123456789".to_vec()));
        assert_ne!(body, Body::from(b"head:0123456780".to_vec()));
        assert_eq!(Body::pieces(Bytes::new(), tail.clone()).to_bytes(), tail);
        assert_eq!(
            format!("{body:?}"),
            format!("{:?}", Bytes::from_static(b"head:0123456789"))
        );
    }
}
