//! Length-prefixed frames carrying postcard-encoded messages.
//!
//! A frame is a 4-byte big-endian payload length followed by that many bytes
//! of [postcard](https://docs.rs/postcard). The length is checked against
//! [`MAX_FRAME_LEN`] **before** any buffer is allocated, and the payload's
//! buffer then grows with the bytes that actually arrive (doubling from
//! [`FIRST_CHUNK`]), never to the announced size up front: a peer that
//! announces 1 MiB and sends one byte a second costs a few KiB, not 1 MiB.
//! A server also charges every buffer beyond [`FIRST_CHUNK`] to a
//! [`MemoryBudget`] shared by all its connections, so the memory that
//! requests in flight can hold is bounded in total, not only per connection.

use serde::de::DeserializeOwned;
use serde::Serialize;
use std::io::{self, Read, Write};
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Largest payload accepted or sent: 1 MiB. A full prediction is ~2 KiB.
pub const MAX_FRAME_LEN: u32 = 1 << 20;

/// First allocation for a payload, and the part of each connection's buffer
/// that is not charged to a [`MemoryBudget`]: every request migsight sends
/// is smaller (a `Recommend` is ~400 bytes), so a server whose budget is
/// exhausted by large stalled frames still reads ordinary requests.
pub const FIRST_CHUNK: usize = 4096;

/// Why a frame could not be read, written or decoded.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("frame of {len} bytes exceeds the {max}-byte limit")]
    TooLarge { len: u64, max: u32 },
    #[error("connection closed mid-frame after {got} of {expected} bytes")]
    Truncated { expected: usize, got: usize },
    #[error("frame of {len} bytes does not fit in the server's request memory ({budget} bytes for all requests in flight are taken)")]
    OverBudget { len: usize, budget: usize },
    #[error("malformed message: {0}")]
    Decode(postcard::Error),
    #[error("message has {0} unexpected trailing bytes")]
    TrailingBytes(usize),
    #[error("cannot encode message: {0}")]
    Encode(postcard::Error),
    /// Not marked as the error's source: the message already carries it,
    /// and `anyhow`'s `{:#}` would print it twice.
    #[error("i/o error: {0}")]
    Io(io::Error),
}

impl From<io::Error> for FrameError {
    fn from(e: io::Error) -> FrameError {
        FrameError::Io(e)
    }
}

/// Memory a server lets the payloads of requests in flight hold, over all
/// its connections (beyond [`FIRST_CHUNK`] each). A frame whose buffer would
/// not fit is refused ([`FrameError::OverBudget`]) rather than waited for:
/// waiting would let stalled senders hold the memory that others need.
#[derive(Debug, Clone)]
pub struct MemoryBudget {
    permits: Arc<Semaphore>,
    bytes: usize,
}

impl MemoryBudget {
    pub fn new(bytes: usize) -> MemoryBudget {
        let bytes = bytes.min(Semaphore::MAX_PERMITS);
        MemoryBudget {
            permits: Arc::new(Semaphore::new(bytes)),
            bytes,
        }
    }

    /// The whole budget, bytes.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Bytes not held by any payload now.
    pub fn available(&self) -> usize {
        self.permits.available_permits()
    }

    /// Makes `held` cover a buffer of `capacity` bytes (the first
    /// [`FIRST_CHUNK`] are free), or refuses without waiting.
    fn cover(
        &self,
        held: &mut Option<OwnedSemaphorePermit>,
        capacity: usize,
        len: usize,
    ) -> Result<(), FrameError> {
        let want = capacity.saturating_sub(FIRST_CHUNK);
        let have = held.as_ref().map_or(0, |p| p.num_permits());
        if want <= have {
            return Ok(());
        }
        let more = u32::try_from(want - have)
            .ok()
            .and_then(|n| self.permits.clone().try_acquire_many_owned(n).ok())
            .ok_or(FrameError::OverBudget {
                len,
                budget: self.bytes,
            })?;
        match held {
            Some(p) => p.merge(more),
            None => *held = Some(more),
        }
        Ok(())
    }
}

/// A frame's payload, holding its share of a [`MemoryBudget`] until dropped.
#[derive(Debug)]
pub struct Payload {
    bytes: Vec<u8>,
    _charge: Option<OwnedSemaphorePermit>,
}

impl Payload {
    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }
}

impl std::ops::Deref for Payload {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.bytes
    }
}

/// Encodes `msg` as a complete frame (length prefix included).
pub fn encode<T: Serialize>(msg: &T) -> Result<Vec<u8>, FrameError> {
    let mut out = postcard::to_extend(msg, vec![0u8; 4]).map_err(FrameError::Encode)?;
    let len = out.len() - 4;
    if len > MAX_FRAME_LEN as usize {
        return Err(FrameError::TooLarge {
            len: len as u64,
            max: MAX_FRAME_LEN,
        });
    }
    out[..4].copy_from_slice(&(len as u32).to_be_bytes());
    Ok(out)
}

/// Decodes one payload (without its length prefix); trailing bytes are an error.
pub fn decode<T: DeserializeOwned>(payload: &[u8]) -> Result<T, FrameError> {
    let (msg, rest) = postcard::take_from_bytes(payload).map_err(FrameError::Decode)?;
    if !rest.is_empty() {
        return Err(FrameError::TrailingBytes(rest.len()));
    }
    Ok(msg)
}

/// The payload length a prefix announces, checked against [`MAX_FRAME_LEN`].
pub fn check_len(prefix: [u8; 4]) -> Result<usize, FrameError> {
    let len = u32::from_be_bytes(prefix);
    if len > MAX_FRAME_LEN {
        return Err(FrameError::TooLarge {
            len: len as u64,
            max: MAX_FRAME_LEN,
        });
    }
    Ok(len as usize)
}

/// The next capacity of a payload buffer: [`FIRST_CHUNK`], then doubling,
/// never past the frame's length.
fn next_capacity(capacity: usize, len: usize) -> usize {
    if capacity == 0 {
        len.min(FIRST_CHUNK)
    } else {
        capacity.saturating_mul(2).min(len)
    }
}

/// Reads a frame's length prefix. `Ok(None)` on a clean end of stream
/// before its first byte; the length is checked against [`MAX_FRAME_LEN`].
pub async fn read_len<R: AsyncRead + Unpin>(r: &mut R) -> Result<Option<usize>, FrameError> {
    let mut prefix = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        let n = r.read(&mut prefix[got..]).await?;
        if n == 0 {
            return if got == 0 {
                Ok(None)
            } else {
                Err(FrameError::Truncated { expected: 4, got })
            };
        }
        got += n;
    }
    check_len(prefix).map(Some)
}

/// Reads a payload of `len` bytes (after [`read_len`]), its buffer growing
/// as bytes arrive and, with a `budget`, charged to it.
pub async fn read_payload<R: AsyncRead + Unpin>(
    r: &mut R,
    len: usize,
    budget: Option<&MemoryBudget>,
) -> Result<Payload, FrameError> {
    let mut bytes: Vec<u8> = Vec::new();
    let mut charge = None;
    while bytes.len() < len {
        if bytes.len() == bytes.capacity() {
            let cap = next_capacity(bytes.capacity(), len);
            if let Some(b) = budget {
                b.cover(&mut charge, cap, len)?;
            }
            bytes.reserve_exact(cap - bytes.len());
        }
        let room = (bytes.capacity() - bytes.len()).min(len - bytes.len());
        let n = (&mut *r).take(room as u64).read_buf(&mut bytes).await?;
        if n == 0 {
            return Err(FrameError::Truncated {
                expected: len,
                got: bytes.len(),
            });
        }
    }
    Ok(Payload {
        bytes,
        _charge: charge,
    })
}

/// Reads one frame's payload. `Ok(None)` on a clean end of stream between frames.
pub async fn read_frame<R: AsyncRead + Unpin>(r: &mut R) -> Result<Option<Vec<u8>>, FrameError> {
    match read_len(r).await? {
        None => Ok(None),
        Some(len) => Ok(Some(read_payload(r, len, None).await?.into_bytes())),
    }
}

/// Writes `msg` as one frame and flushes.
pub async fn write_frame<W: AsyncWrite + Unpin, T: Serialize>(
    w: &mut W,
    msg: &T,
) -> Result<(), FrameError> {
    let bytes = encode(msg)?;
    w.write_all(&bytes).await?;
    w.flush().await?;
    Ok(())
}

/// Blocking variant of [`read_frame`] (the buffer grows as bytes arrive).
pub fn read_frame_blocking<R: Read>(r: &mut R) -> Result<Option<Vec<u8>>, FrameError> {
    let mut prefix = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        let n = r.read(&mut prefix[got..])?;
        if n == 0 {
            return if got == 0 {
                Ok(None)
            } else {
                Err(FrameError::Truncated { expected: 4, got })
            };
        }
        got += n;
    }
    let len = check_len(prefix)?;
    let mut buf = Vec::with_capacity(len.min(FIRST_CHUNK));
    r.take(len as u64).read_to_end(&mut buf)?;
    if buf.len() < len {
        return Err(FrameError::Truncated {
            expected: len,
            got: buf.len(),
        });
    }
    Ok(Some(buf))
}

/// Blocking variant of [`write_frame`].
pub fn write_frame_blocking<W: Write, T: Serialize>(w: &mut W, msg: &T) -> Result<(), FrameError> {
    let bytes = encode(msg)?;
    w.write_all(&bytes)?;
    w.flush()?;
    Ok(())
}
#[cfg(test)]
mod tests {
    use super::*;

    /// A reader that fails the test if more than `limit` bytes are requested
    /// at once, proving the oversize frame is refused before allocation.
    struct Stingy<'a> {
        data: &'a [u8],
        limit: usize,
    }
    impl Read for Stingy<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            assert!(
                buf.len() <= self.limit,
                "reader asked for {} bytes",
                buf.len()
            );
            let n = buf.len().min(self.data.len());
            buf[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
    }

    #[test]
    fn oversize_prefix_is_rejected_before_allocation() {
        let prefix = (u32::MAX).to_be_bytes();
        let mut r = Stingy {
            data: &prefix,
            limit: 4,
        };
        match read_frame_blocking(&mut r) {
            Err(FrameError::TooLarge { len, max }) => {
                assert_eq!(len, u32::MAX as u64);
                assert_eq!(max, MAX_FRAME_LEN);
            }
            other => panic!("expected TooLarge, got {other:?}"),
        }
    }

    #[test]
    fn truncated_frames_are_typed_errors() {
        let mut frame = encode(&"hello".to_string()).unwrap();
        frame.truncate(frame.len() - 2);
        let e = read_frame_blocking(&mut &frame[..]).unwrap_err();
        assert!(matches!(e, FrameError::Truncated { .. }), "{e:?}");
        let e = read_frame_blocking(&mut &[0u8, 0][..]).unwrap_err();
        assert!(matches!(
            e,
            FrameError::Truncated {
                expected: 4,
                got: 2
            }
        ));
        assert!(read_frame_blocking(&mut &[][..]).unwrap().is_none());
    }

    #[test]
    fn garbage_payload_is_a_decode_error() {
        let e = decode::<(u64, String, f64)>(&[
            0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        ])
        .unwrap_err();
        assert!(matches!(e, FrameError::Decode(_)), "{e:?}");
        let bytes = postcard::to_allocvec(&7u8).unwrap();
        let mut more = bytes.clone();
        more.push(1);
        assert!(matches!(
            decode::<u8>(&more),
            Err(FrameError::TrailingBytes(1))
        ));
    }

    #[tokio::test]
    async fn a_frame_costs_what_has_arrived_not_what_was_announced() {
        let budget = MemoryBudget::new(MAX_FRAME_LEN as usize);
        let (mut tx, mut rx) = tokio::io::duplex(1 << 16);
        let b = budget.clone();
        let reader = tokio::spawn(async move {
            let len = read_len(&mut rx).await?.unwrap_or(0);
            read_payload(&mut rx, len, Some(&b)).await.map(|p| p.len())
        });
        // Announce the cap, send a little more than the free first chunk.
        tx.write_all(&MAX_FRAME_LEN.to_be_bytes()).await.unwrap();
        tx.write_all(&[1u8; FIRST_CHUNK + 10]).await.unwrap();
        for _ in 0..500 {
            if budget.available() < budget.bytes() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        let held = budget.bytes() - budget.available();
        assert_eq!(held, FIRST_CHUNK, "one doubling beyond the free chunk");
        // The sender gives up: a typed error, and the budget is whole again.
        drop(tx);
        let e = reader.await.unwrap().unwrap_err();
        assert!(matches!(e, FrameError::Truncated { .. }), "{e:?}");
        assert_eq!(budget.available(), budget.bytes());
    }

    #[tokio::test]
    async fn frames_that_do_not_fit_the_budget_are_refused_at_once() {
        let budget = MemoryBudget::new(MAX_FRAME_LEN as usize);
        let big = vec![9u8; MAX_FRAME_LEN as usize];
        let mut first = &big[..];
        let held = read_payload(&mut first, big.len(), Some(&budget))
            .await
            .unwrap();
        assert_eq!(held.len(), big.len());
        assert_eq!(budget.available(), FIRST_CHUNK);
        let mut second = &big[..];
        let e = read_payload(&mut second, big.len(), Some(&budget))
            .await
            .unwrap_err();
        assert!(matches!(e, FrameError::OverBudget { .. }), "{e:?}");
        // Small requests still fit: the first chunk is not charged.
        let small = [3u8; 400];
        let mut r = &small[..];
        assert_eq!(
            read_payload(&mut r, small.len(), Some(&budget))
                .await
                .unwrap()
                .len(),
            400
        );
        drop(held);
        assert_eq!(budget.available(), budget.bytes());
    }

    #[tokio::test]
    async fn async_round_trip() {
        let (mut a, mut b) = tokio::io::duplex(64);
        let msg = vec![1.5f64; 100];
        let w = tokio::spawn(async move { write_frame(&mut a, &msg).await });
        let payload = read_frame(&mut b).await.unwrap().unwrap();
        w.await.unwrap().unwrap();
        let back: Vec<f64> = decode(&payload).unwrap();
        assert_eq!(back, vec![1.5f64; 100]);
    }
}
