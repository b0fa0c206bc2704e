//! A bounds-checked cursor over a message body. Every accessor returns an
//! error instead of panicking when the body is shorter than it claims.

use bytes::{Buf, Bytes};

use crate::DecodeError;

pub(crate) struct Reader {
    body: Bytes,
}

impl Reader {
    pub(crate) fn new(body: Bytes) -> Self {
        Reader { body }
    }

    fn need(&self, n: usize, what: &'static str) -> Result<(), DecodeError> {
        if self.body.remaining() < n {
            Err(DecodeError::Malformed { what })
        } else {
            Ok(())
        }
    }

    pub(crate) fn u8(&mut self, what: &'static str) -> Result<u8, DecodeError> {
        self.need(1, what)?;
        Ok(self.body.get_u8())
    }

    pub(crate) fn i16(&mut self, what: &'static str) -> Result<i16, DecodeError> {
        self.need(2, what)?;
        Ok(self.body.get_i16())
    }

    pub(crate) fn i32(&mut self, what: &'static str) -> Result<i32, DecodeError> {
        self.need(4, what)?;
        Ok(self.body.get_i32())
    }

    pub(crate) fn u32(&mut self, what: &'static str) -> Result<u32, DecodeError> {
        self.need(4, what)?;
        Ok(self.body.get_u32())
    }

    /// A non-negative count whose items take at least `item_size` bytes each:
    /// checked against what is left, so no huge allocation follows a lie.
    pub(crate) fn count(
        &mut self,
        item_size: usize,
        what: &'static str,
    ) -> Result<usize, DecodeError> {
        let n = self.i16(what)?;
        let n = usize::try_from(n).map_err(|_| DecodeError::Malformed { what })?;
        if n.saturating_mul(item_size) > self.body.remaining() {
            return Err(DecodeError::Malformed { what });
        }
        Ok(n)
    }

    pub(crate) fn bytes(&mut self, n: usize, what: &'static str) -> Result<Bytes, DecodeError> {
        self.need(n, what)?;
        Ok(self.body.split_to(n))
    }

    /// A length-prefixed value; length -1 is NULL.
    pub(crate) fn nullable(&mut self, what: &'static str) -> Result<Option<Bytes>, DecodeError> {
        let len = self.i32(what)?;
        if len == -1 {
            return Ok(None);
        }
        let len = usize::try_from(len).map_err(|_| DecodeError::Malformed { what })?;
        self.bytes(len, what).map(Some)
    }

    pub(crate) fn cstr(&mut self, what: &'static str) -> Result<String, DecodeError> {
        let end = self
            .body
            .iter()
            .position(|&b| b == 0)
            .ok_or(DecodeError::Malformed { what })?;
        let raw = self.body.split_to(end);
        self.body.advance(1);
        String::from_utf8(raw.to_vec()).map_err(|_| DecodeError::InvalidUtf8 { what })
    }

    pub(crate) fn rest(&mut self) -> Bytes {
        self.body.split_off(0)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.body.is_empty()
    }

    pub(crate) fn finish(&self, what: &'static str) -> Result<(), DecodeError> {
        if self.body.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::Malformed { what })
        }
    }
}
