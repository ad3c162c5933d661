//! `--files`' floor of the design (issue 17): what moving one MB of a file up or down costs
//! at the least on this machine, whatever the pipeline, measured here instead of estimated.
//!
//! The floor of a direction is the raw QUIC bulk run's CPU per MB, both ends together (the
//! transfer's QUIC moves a little more than the file: [`WIRE_BYTES_PER_FILE_BYTE`]), plus
//! one measured AEAD pass per MB for every time the design seals or opens the file's bytes
//! on the way ([`PASSES_UP`], [`PASSES_DOWN`]). Nothing else is in it: no copy, allocation,
//! file write, sync, system call beyond QUIC's, signature, digest or wake-up. From it,
//! `cores × 1,000 ms / floor` is the most MB/s the two processes could reach on this
//! machine's cores even if they did nothing else and kept every core busy, and that over raw
//! QUIC's MB/s is the highest ratio to raw QUIC the design allows here.
//!
//! Each AEAD figure is the mean of sealing and opening 16 KiB-sized buffers in place (the
//! sizes the transfer uses: a 16,384-byte Noise block, a 16,000-byte piece), over
//! [`AEAD_BYTES`] each way, in CPU time of the measuring thread: XChaCha20-Poly1305 with the
//! `chacha20poly1305` crate the protocol and the client use, ChaCha20-Poly1305 with ring's
//! code, which snow runs for the Noise records (`protocol/src/noise.rs`); the portable
//! crate's ChaCha20-Poly1305 is measured too (`aead_ms_per_mb`), for comparison.
//!
//! Left out of the passes (each is smaller, or not an AEAD pass over the file's bytes):
//! - the records going the other way: on the way up the relay seals (and the client opens)
//!   a record of `Ok`s for up to 16 records of pieces; on the way down the client seals (and
//!   the relay opens) a record of `ChunkGet`s for about 48 pieces;
//! - the SHA-256 digest of the plaintext, once each way (`upload_via` hashes the file
//!   before it sends; `decrypt_all` hashes the opened segments at the end of a download):
//!   measured as `sha256_ms_per_mb` and given with `design_max_ratio_*_with_digest`;
//! - snow's copy of each record's payload and the protocol's allocation per record
//!   (measured together with the pass as `noise_record_ms_per_mb`, not used in the floor).
//!
//! Beside the floor, a what-if: the ratio the floor would allow if every pass cost what
//! ring's ChaCha20-Poly1305 costs (`aead_ring_ms_per_mb`; the XChaCha20-Poly1305 passes
//! would then need ring under an HChaCha20 subkey: per byte it costs the same).

use anyhow::{anyhow, Result};
use chacha20poly1305::aead::{AeadInPlace, KeyInit, Nonce};
use chacha20poly1305::{ChaCha20Poly1305, XChaCha20Poly1305};
use rand_core::{OsRng, RngCore};
use sha2::{Digest, Sha256};
use tidings_client::files::crypt::{SEGMENT_LEN, SEGMENT_PLAIN_LEN};
use tidings_protocol::block::BLOCK_LEN;
use tidings_protocol::chunk::PIECE_LEN;
use tidings_protocol::noise::RECORD_LEN;

use crate::floor::thread_cpu_ns;

/// Bytes each AEAD (and the digest) is measured over, each way: 256 MiB.
pub const AEAD_BYTES: usize = 256 << 20;

/// Encrypted file bytes per file byte (the STREAM tag of every 64 KiB segment).
const ENCRYPTED: f64 = SEGMENT_LEN as f64 / SEGMENT_PLAIN_LEN as f64;
/// Bytes a Noise pass covers per file byte: a 16,384-byte block per 16,000-byte piece.
const NOISE: f64 = ENCRYPTED * BLOCK_LEN as f64 / PIECE_LEN as f64;
/// Bytes QUIC carries per file byte: a 16,400-byte record per 16,000-byte piece.
pub const WIRE_BYTES_PER_FILE_BYTE: f64 = ENCRYPTED * RECORD_LEN as f64 / PIECE_LEN as f64;

/// The AEAD of a pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Aead {
    /// ChaCha20-Poly1305 (Noise transport records, through snow with ring's code).
    ChaCha,
    /// XChaCha20-Poly1305 (the file's STREAM segments, chunk files, recipient re-sealing).
    XChaCha,
}

/// One time the design seals or opens the file's bytes on their way.
#[derive(Debug, Clone, Copy)]
pub struct Pass {
    /// Who does it and where in the code.
    pub what: &'static str,
    /// Which AEAD.
    pub aead: Aead,
    /// Bytes the pass covers per byte of the file.
    pub per_file_byte: f64,
}

/// The passes of an upload, in the order the bytes meet them.
pub const PASSES_UP: &[Pass] = &[
    // 1. Client: the file's STREAM encryption, 64 KiB segments (`encrypt_chunk` in
    //    client/src/files/transfer.rs, `FileCipher::seal_segment` in crypt.rs).
    Pass {
        what: "client: STREAM seal of the file's segments",
        aead: Aead::XChaCha,
        per_file_byte: 1.0,
    },
    // 2. Client: the Noise seal of the record that carries each `ChunkPut`
    //    (`RelayConnection::send_block`, `Session::seal` in protocol/src/noise.rs).
    Pass {
        what: "client: Noise seal of the ChunkPut records",
        aead: Aead::ChaCha,
        per_file_byte: NOISE,
    },
    // 3. Relay: the Noise open of that record (relay/src/session.rs, `Session::open`).
    Pass {
        what: "relay: Noise open of the ChunkPut records",
        aead: Aead::ChaCha,
        per_file_byte: NOISE,
    },
    // 4. Relay: the piece sealed at rest under the chunk's own key
    //    (`OpenPieceFile::write_piece` in relay/src/store/pieces.rs).
    Pass {
        what: "relay: chunk file seal of each piece",
        aead: Aead::XChaCha,
        per_file_byte: ENCRYPTED,
    },
];

/// The passes of a download, in the order the bytes meet them.
pub const PASSES_DOWN: &[Pass] = &[
    // 1. Relay: the piece opened from its chunk file (`PieceFile::read_piece` in
    //    relay/src/store/pieces.rs).
    Pass {
        what: "relay: chunk file open of each piece",
        aead: Aead::XChaCha,
        per_file_byte: ENCRYPTED,
    },
    // 2. Relay: the piece sealed again for this recipient under its `ChunkKey` with a fresh
    //    nonce (`ChunkGet` in relay/src/dispatch/chunks.rs, `ChunkKey::seal`).
    Pass {
        what: "relay: re-seal of each piece for the recipient",
        aead: Aead::XChaCha,
        per_file_byte: ENCRYPTED,
    },
    // 3. Relay: the Noise seal of the record that carries each `ChunkData` (`send` in
    //    relay/src/session.rs).
    Pass {
        what: "relay: Noise seal of the ChunkData records",
        aead: Aead::ChaCha,
        per_file_byte: NOISE,
    },
    // 4. Client: the Noise open of that record (`RelayConnection::take_record`).
    Pass {
        what: "client: Noise open of the ChunkData records",
        aead: Aead::ChaCha,
        per_file_byte: NOISE,
    },
    // 5. Client: the recipient's open of the re-sealed piece (`open_piece` in
    //    client/src/files/transfer.rs, `ChunkKey::open`).
    Pass {
        what: "client: open of each re-sealed piece",
        aead: Aead::XChaCha,
        per_file_byte: ENCRYPTED,
    },
    // 6. Client: the final check, every STREAM segment opened (`verify`, `decrypt_all`).
    Pass {
        what: "client: STREAM open of every segment (the final check)",
        aead: Aead::XChaCha,
        per_file_byte: 1.0,
    },
];

/// What one pass of each kind costs on this machine.
#[derive(Debug, Clone, Copy)]
pub struct Costs {
    /// Whether the figures are thread CPU time (else wall time).
    pub thread_cpu: bool,
    /// ChaCha20-Poly1305 over 16,384-byte buffers in place, ms per MB (mean of seal, open).
    pub chacha_ms_per_mb: f64,
    /// XChaCha20-Poly1305 over 16,000-byte buffers in place, ms per MB (mean of seal, open).
    pub xchacha_ms_per_mb: f64,
    /// One Noise record sealed or opened by the protocol's `Session` (the pass, snow's copy
    /// and the record's allocation), ms per MB of blocks.
    pub noise_record_ms_per_mb: f64,
    /// SHA-256, ms per MB.
    pub sha256_ms_per_mb: f64,
    /// ring's ChaCha20-Poly1305 over 16,384-byte buffers in place, ms per MB (mean of seal
    /// and open). Not used by the transfer: the what-if of a faster implementation.
    pub ring_chacha_ms_per_mb: f64,
}

impl Costs {
    /// ms per MB of one pass of `aead` over a byte.
    fn of(&self, aead: Aead) -> f64 {
        match aead {
            // snow seals and opens the Noise records with ring's ChaCha20-Poly1305.
            Aead::ChaCha => self.ring_chacha_ms_per_mb,
            Aead::XChaCha => self.xchacha_ms_per_mb,
        }
    }

    /// ms per MB of the file that `passes` cost.
    pub fn passes(&self, passes: &[Pass]) -> f64 {
        passes
            .iter()
            .map(|p| self.of(p.aead) * p.per_file_byte)
            .sum()
    }

    /// The same if every pass cost what ring's ChaCha20-Poly1305 costs.
    pub fn passes_at_ring(&self, passes: &[Pass]) -> f64 {
        passes
            .iter()
            .map(|p| self.ring_chacha_ms_per_mb * p.per_file_byte)
            .sum()
    }
}

/// CPU time of this thread (or wall time when the kernel does not tell), ns.
fn now_ns(thread_cpu: bool, wall: std::time::Instant) -> u64 {
    if thread_cpu {
        thread_cpu_ns().unwrap_or(0)
    } else {
        u64::try_from(wall.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }
}

/// ms per MB of `bytes` processed between `start` and now.
fn ms_per_mb(thread_cpu: bool, wall: std::time::Instant, start: u64, bytes: usize) -> f64 {
    let ns = now_ns(thread_cpu, wall).saturating_sub(start) as f64;
    ns / 1e6 / (bytes.max(1) as f64 / 1e6)
}

/// Mean ms per MB of sealing and opening `piece`-byte buffers in place with `A`, over `total`
/// bytes each way.
fn aead<A: AeadInPlace + KeyInit>(thread_cpu: bool, piece: usize, total: usize) -> Result<f64> {
    let mut key = [0u8; 32];
    OsRng.fill_bytes(&mut key);
    let cipher = A::new_from_slice(&key).map_err(|_| anyhow!("AEAD key length"))?;
    let mut buf = vec![0u8; piece];
    OsRng.fill_bytes(&mut buf);
    let mut nonce = Nonce::<A>::default();
    let aad = 0u32.to_be_bytes();
    let rounds = (total / piece).max(1);
    let mut round = |i: usize| -> Result<()> {
        // A fresh nonce each time: a counter in the nonce's first bytes.
        for (n, b) in nonce.iter_mut().zip(i.to_le_bytes()) {
            *n = b;
        }
        let tag = cipher
            .encrypt_in_place_detached(&nonce, &aad, &mut buf)
            .map_err(|_| anyhow!("AEAD seal"))?;
        cipher
            .decrypt_in_place_detached(&nonce, &aad, &mut buf, &tag)
            .map_err(|_| anyhow!("AEAD open"))?;
        Ok(())
    };
    for i in 0..16 {
        round(i)?;
    }
    let wall = std::time::Instant::now();
    let start = now_ns(thread_cpu, wall);
    for i in 16..16 + rounds {
        round(i)?;
    }
    Ok(ms_per_mb(thread_cpu, wall, start, 2 * rounds * piece))
}

/// Mean ms per MB of sealing and opening `piece`-byte buffers in place with ring's
/// ChaCha20-Poly1305, over `total` bytes each way.
fn ring_chacha(thread_cpu: bool, piece: usize, total: usize) -> Result<f64> {
    use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305};
    let mut key = [0u8; 32];
    OsRng.fill_bytes(&mut key);
    let key = LessSafeKey::new(
        UnboundKey::new(&CHACHA20_POLY1305, &key).map_err(|_| anyhow!("ring AEAD key"))?,
    );
    let mut buf = vec![0u8; piece];
    OsRng.fill_bytes(&mut buf);
    let rounds = (total / piece).max(1);
    let round = |i: usize, buf: &mut Vec<u8>| -> Result<()> {
        let mut n = [0u8; 12];
        for (b, c) in n.iter_mut().zip(i.to_le_bytes()) {
            *b = c;
        }
        let tag = key
            .seal_in_place_separate_tag(Nonce::assume_unique_for_key(n), Aad::from([0u8; 4]), buf)
            .map_err(|_| anyhow!("ring AEAD seal"))?;
        key.open_in_place_separate_tag(
            Nonce::assume_unique_for_key(n),
            Aad::from([0u8; 4]),
            tag,
            buf,
            0..,
        )
        .map_err(|_| anyhow!("ring AEAD open"))?;
        Ok(())
    };
    for i in 0..16 {
        round(i, &mut buf)?;
    }
    let wall = std::time::Instant::now();
    let start = now_ns(thread_cpu, wall);
    for i in 16..16 + rounds {
        round(i, &mut buf)?;
    }
    Ok(ms_per_mb(thread_cpu, wall, start, 2 * rounds * piece))
}

/// Mean ms per MB of blocks of one Noise record sealed by one session and opened by the
/// other (as `Session::seal` and `Session::open` do it for the transfer).
fn noise_records(thread_cpu: bool, total: usize) -> Result<f64> {
    let (mut client, mut relay) = crate::floor::sessions()?;
    let block = crate::floor::full_block(PIECE_LEN + 100)?;
    let rounds = (total / BLOCK_LEN).max(1);
    for _ in 0..16 {
        relay.open(client.seal(&block)?.as_bytes())?;
    }
    let wall = std::time::Instant::now();
    let start = now_ns(thread_cpu, wall);
    for _ in 0..rounds {
        let record = client.seal(&block)?;
        std::hint::black_box(relay.open(record.as_bytes())?);
    }
    Ok(ms_per_mb(thread_cpu, wall, start, 2 * rounds * BLOCK_LEN))
}

/// ms per MB of SHA-256 over `total` bytes, 64 KiB at a time (as the transfer hashes).
fn sha256(thread_cpu: bool, total: usize) -> f64 {
    let mut buf = vec![0u8; SEGMENT_PLAIN_LEN];
    OsRng.fill_bytes(&mut buf);
    let rounds = (total / buf.len()).max(1);
    let mut h = Sha256::new();
    h.update(&buf);
    let wall = std::time::Instant::now();
    let start = now_ns(thread_cpu, wall);
    for _ in 0..rounds {
        h.update(&buf);
    }
    std::hint::black_box(h.finalize());
    ms_per_mb(thread_cpu, wall, start, rounds * buf.len())
}

/// Measures every pass kind over `total` bytes each way, on the calling thread.
pub fn measure(total: usize) -> Result<Costs> {
    let thread_cpu = thread_cpu_ns().is_some();
    Ok(Costs {
        thread_cpu,
        chacha_ms_per_mb: aead::<ChaCha20Poly1305>(thread_cpu, BLOCK_LEN, total)?,
        xchacha_ms_per_mb: aead::<XChaCha20Poly1305>(thread_cpu, PIECE_LEN, total)?,
        noise_record_ms_per_mb: noise_records(thread_cpu, total)?,
        sha256_ms_per_mb: sha256(thread_cpu, total),
        ring_chacha_ms_per_mb: ring_chacha(thread_cpu, BLOCK_LEN, total)?,
    })
}

/// The floor of one direction, ms per MB of the file: raw QUIC's CPU per MB (both ends)
/// for the bytes QUIC carries, plus `passes`.
pub fn floor_ms_per_mb(raw_quic_cpu_ms_per_mb: f64, costs: &Costs, passes: &[Pass]) -> f64 {
    raw_quic_cpu_ms_per_mb * WIRE_BYTES_PER_FILE_BYTE + costs.passes(passes)
}

/// The highest ratio to raw QUIC that a transfer costing `floor` ms per MB can reach with
/// every one of `cores` busy.
pub fn max_ratio(cores: f64, floor: f64, raw_quic_mb_s: f64) -> f64 {
    if floor > 0.0 && raw_quic_mb_s > 0.0 {
        cores * 1000.0 / floor / raw_quic_mb_s
    } else {
        f64::INFINITY
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_passes_are_the_designs() {
        assert_eq!(PASSES_UP.len(), 4);
        assert_eq!(PASSES_DOWN.len(), 6);
        let noise = |p: &[Pass]| p.iter().filter(|p| p.aead == Aead::ChaCha).count();
        // One Noise seal and one open each way.
        assert_eq!((noise(PASSES_UP), noise(PASSES_DOWN)), (2, 2));
        // The wire and the Noise blocks carry a few percent more than the file.
        const {
            assert!(WIRE_BYTES_PER_FILE_BYTE > NOISE && NOISE > ENCRYPTED && ENCRYPTED > 1.0);
            assert!(WIRE_BYTES_PER_FILE_BYTE < 1.03);
        }
    }

    #[test]
    fn the_floor_is_quic_plus_the_passes() -> Result<()> {
        let costs = measure(1 << 20)?;
        for c in [
            costs.chacha_ms_per_mb,
            costs.xchacha_ms_per_mb,
            costs.noise_record_ms_per_mb,
            costs.sha256_ms_per_mb,
            costs.ring_chacha_ms_per_mb,
        ] {
            assert!(c.is_finite() && c >= 0.0, "{costs:?}");
        }
        let fixed = Costs {
            thread_cpu: true,
            chacha_ms_per_mb: 0.5,
            xchacha_ms_per_mb: 0.5,
            noise_record_ms_per_mb: 0.6,
            sha256_ms_per_mb: 0.4,
            ring_chacha_ms_per_mb: 0.25,
        };
        let up = floor_ms_per_mb(4.0, &fixed, PASSES_UP);
        // Two XChaCha passes at the crate's cost, two Noise passes at ring's.
        let plain = 4.0 + 2.0 * 0.5 + 2.0 * 0.25;
        assert!(up > plain && up < plain * 1.03, "{up}");
        let ring = fixed.passes_at_ring(PASSES_DOWN);
        assert!(ring > 6.0 * 0.25 && ring < 6.0 * 0.25 * 1.03, "{ring}");
        // 2 cores at 8 ms per MB move 250 MB/s: half of 500.
        assert!((max_ratio(2.0, 8.0, 500.0) - 0.5).abs() < 1e-9);
        Ok(())
    }
}
