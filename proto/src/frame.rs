//! Length-prefixed frames carrying postcard-encoded messages.
//!
//! A frame is a 4-byte big-endian payload length followed by that many bytes
//! of [postcard](https://docs.rs/postcard). The length is checked against
//! [`MAX_FRAME_LEN`] **before** any buffer is allocated, so a hostile peer
//! cannot make a daemon reserve memory by announcing a huge frame.

use serde::de::DeserializeOwned;
use serde::Serialize;
use std::io::{self, Read, Write};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Largest payload accepted or sent: 1 MiB. A full prediction is ~2 KiB.
pub const MAX_FRAME_LEN: u32 = 1 << 20;

/// Why a frame could not be read, written or decoded.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("frame of {len} bytes exceeds the {max}-byte limit")]
    TooLarge { len: u64, max: u32 },
    #[error("connection closed mid-frame after {got} of {expected} bytes")]
    Truncated { expected: usize, got: usize },
    #[error("malformed message: {0}")]
    Decode(postcard::Error),
    #[error("message has {0} unexpected trailing bytes")]
    TrailingBytes(usize),
    #[error("cannot encode message: {0}")]
    Encode(postcard::Error),
    #[error("i/o error: {0}")]
    Io(#[from] io::Error),
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

fn check_len(prefix: [u8; 4]) -> Result<usize, FrameError> {
    let len = u32::from_be_bytes(prefix);
    if len > MAX_FRAME_LEN {
        return Err(FrameError::TooLarge {
            len: len as u64,
            max: MAX_FRAME_LEN,
        });
    }
    Ok(len as usize)
}

/// Reads one frame's payload. `Ok(None)` on a clean end of stream between frames.
pub async fn read_frame<R: AsyncRead + Unpin>(r: &mut R) -> Result<Option<Vec<u8>>, FrameError> {
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
    let len = check_len(prefix)?;
    let mut buf = vec![0u8; len];
    let mut got = 0;
    while got < len {
        let n = r.read(&mut buf[got..]).await?;
        if n == 0 {
            return Err(FrameError::Truncated { expected: len, got });
        }
        got += n;
    }
    Ok(Some(buf))
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

/// Blocking variant of [`read_frame`].
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
    let mut buf = vec![0u8; len];
    let mut got = 0;
    while got < len {
        let n = r.read(&mut buf[got..])?;
        if n == 0 {
            return Err(FrameError::Truncated { expected: len, got });
        }
        got += n;
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
