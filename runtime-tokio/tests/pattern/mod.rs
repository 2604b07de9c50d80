//! Helpers for the stream tests (`streams.rs`, `backpressure.rs`): deterministic content
//! that a reader can check at any offset, and small read/write loops.
#![allow(dead_code)]

use std::io;
use std::time::Duration;

use tether_tokio::{Error, Stream};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

pub(crate) const KIB: u64 = 1024;
pub(crate) const MIB: u64 = 1024 * KIB;

/// Word `k` of stream `seed`: splitmix64, so every offset is checkable on its own.
fn word(seed: u64, k: u64) -> u64 {
    let mut z = (seed ^ 0x5851_F42D_4C95_7F2D).wrapping_add(k.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Fills `buf` with the bytes of stream `seed` at `offset..offset + buf.len()`.
pub(crate) fn fill(seed: u64, offset: u64, buf: &mut [u8]) {
    let byte = |pos: u64| word(seed, pos / 8).to_le_bytes()[(pos % 8) as usize];
    let head = (((8 - offset % 8) % 8) as usize).min(buf.len());
    for (i, b) in buf[..head].iter_mut().enumerate() {
        *b = byte(offset + i as u64);
    }
    let mut pos = offset + head as u64;
    let mut words = buf[head..].chunks_exact_mut(8);
    for chunk in &mut words {
        chunk.copy_from_slice(&word(seed, pos / 8).to_le_bytes());
        pos += 8;
    }
    for b in words.into_remainder() {
        *b = byte(pos);
        pos += 1;
    }
}

/// Checks received bytes against stream `seed`, in order; `offset` counts them.
pub(crate) struct Checker {
    seed: u64,
    pub(crate) offset: u64,
    scratch: Vec<u8>,
}

impl Checker {
    pub(crate) fn new(seed: u64) -> Checker {
        Checker {
            seed,
            offset: 0,
            scratch: Vec::new(),
        }
    }

    pub(crate) fn check(&mut self, data: &[u8]) {
        self.scratch.resize(data.len(), 0);
        fill(self.seed, self.offset, &mut self.scratch);
        if let Some(at) = data.iter().zip(&self.scratch).position(|(a, b)| a != b) {
            panic!(
                "stream {}: corrupt byte at offset {}",
                self.seed,
                self.offset + at as u64
            );
        }
        self.offset += data.len() as u64;
    }
}

/// Writes bytes `from..total` of stream `seed` in 64 KiB writes, then FIN.
pub(crate) async fn send_pattern(
    w: &mut (impl AsyncWrite + Unpin),
    seed: u64,
    from: u64,
    total: u64,
) {
    let mut buf = vec![0u8; 64 * KIB as usize];
    let mut at = from;
    while at < total {
        let n = (total - at).min(buf.len() as u64) as usize;
        fill(seed, at, &mut buf[..n]);
        w.write_all(&buf[..n]).await.expect("write");
        at += n as u64;
    }
    w.shutdown().await.expect("shutdown");
}

/// Reads to EOF, checking every byte against stream `seed`; returns how many arrived.
pub(crate) async fn recv_pattern(r: &mut (impl AsyncRead + Unpin), seed: u64) -> u64 {
    let mut checker = Checker::new(seed);
    let mut buf = vec![0u8; 64 * KIB as usize];
    loop {
        match r.read(&mut buf).await.expect("read") {
            0 => return checker.offset,
            n => checker.check(&buf[..n]),
        }
    }
}

/// Sends `total` bytes of `send_seed` while receiving and checking `total` of `recv_seed`.
pub(crate) async fn exchange(stream: Stream, send_seed: u64, recv_seed: u64, total: u64) {
    let (mut r, mut w) = tokio::io::split(stream);
    let (_, got) = tokio::join!(
        send_pattern(&mut w, send_seed, 0, total),
        recv_pattern(&mut r, recv_seed)
    );
    assert_eq!(got, total, "stream {recv_seed}: wrong length");
}

/// The `tether_tokio::Error` inside a stream's io error.
pub(crate) fn inner(e: &io::Error) -> &Error {
    e.get_ref()
        .and_then(|e| e.downcast_ref::<Error>())
        .unwrap_or_else(|| panic!("not an SDK error: {e:?}"))
}

/// Reads until an error (within 20 s); a clean EOF is a failure.
pub(crate) async fn read_until_error(r: &mut (impl AsyncRead + Unpin)) -> io::Error {
    let mut buf = [0u8; 1024];
    let read = async {
        loop {
            match r.read(&mut buf).await {
                Ok(0) => panic!("a clean EOF where an error was expected"),
                Ok(_) => continue,
                Err(e) => return e,
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(20), read)
        .await
        .expect("no error within 20 s")
}

/// Writes 1 KiB at a time (pausing a little) until a write fails (within 20 s).
pub(crate) async fn write_until_error(w: &mut (impl AsyncWrite + Unpin)) -> io::Error {
    let write = async {
        loop {
            if let Err(e) = w.write_all(&[0u8; 1024]).await {
                return e;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(20), write)
        .await
        .expect("writes kept working")
}

/// Reads to EOF (within 20 s).
pub(crate) async fn read_all(r: &mut (impl AsyncRead + Unpin)) -> io::Result<Vec<u8>> {
    let mut got = Vec::new();
    let read = r.read_to_end(&mut got);
    tokio::time::timeout(Duration::from_secs(20), read)
        .await
        .expect("no EOF within 20 s")?;
    Ok(got)
}
