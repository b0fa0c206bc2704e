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

    /// A 16-bit item count whose items take at least `item_size` bytes each.
    ///
    /// Read unsigned, as the server does (`pq_getmsgint(msg, 2)`), so Bind
    /// with up to 65 535 parameters is accepted. Checked against what is left
    /// so no allocation or long loop follows a lying count.
    pub(crate) fn count(
        &mut self,
        item_size: usize,
        what: &'static str,
    ) -> Result<usize, DecodeError> {
        self.need(2, what)?;
        let n = usize::from(self.body.get_u16());
        if n.saturating_mul(item_size) > self.body.remaining() {
            return Err(DecodeError::Malformed { what });
        }
        Ok(n)
    }

    pub(crate) fn bytes(&mut self, n: usize, what: &'static str) -> Result<Bytes, DecodeError> {
        self.need(n, what)?;
        Ok(self.body.split_to(n))
    }

    pub(crate) fn array<const N: usize>(
        &mut self,
        what: &'static str,
    ) -> Result<[u8; N], DecodeError> {
        let mut out = [0u8; N];
        self.need(N, what)?;
        self.body.copy_to_slice(&mut out);
        Ok(out)
    }

    /// A length-prefixed value; length -1 is NULL.
    pub(crate) fn nullable(&mut self, what: &'static str) -> Result<Option<Bytes>, DecodeError> {
        let len = self.i32(what)?;
        if len == -1 {
            return Ok(None);
        }
        // Any other negative length is a lie; `bytes` then checks the rest.
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
