//! The length of a voice note, read from its container: Ogg (Opus or Vorbis) or MP3. Header
//! parsing only (no decoding), on untrusted bytes: every read is bounds-checked.

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

/// Bytes read from each end of the file.
const WINDOW: u64 = 64 << 10;

fn read_at(f: &mut std::fs::File, at: u64, len: u64) -> Option<Vec<u8>> {
    f.seek(SeekFrom::Start(at)).ok()?;
    let mut buf = Vec::new();
    f.take(len).read_to_end(&mut buf).ok()?;
    Some(buf)
}

fn le_u16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn le_u32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn be_u32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// Seconds of audio in the file at `path`, rounded to the nearest second; `None` when it is
/// neither Ogg (Opus, Vorbis) nor MP3, or its headers make no sense.
pub fn audio_duration_secs(path: &Path) -> Option<u32> {
    let mut f = std::fs::File::open(path).ok()?;
    let len = f.metadata().ok()?.len();
    let head = read_at(&mut f, 0, WINDOW)?;
    let secs = if head.starts_with(b"OggS") {
        let tail_at = len.saturating_sub(WINDOW);
        let tail = read_at(&mut f, tail_at, WINDOW)?;
        ogg_secs(&head, &tail)?
    } else {
        mp3_secs(&head, len)?
    };
    (secs.is_finite() && secs >= 0.0 && secs < f64::from(u32::MAX)).then(|| secs.round() as u32)
}

fn ogg_secs(head: &[u8], tail: &[u8]) -> Option<f64> {
    // The first packet starts after the first page's header and segment table.
    let segments = usize::from(*head.get(26)?);
    let packet = head.get(27 + segments..)?;
    let (rate, pre_skip) = if packet.starts_with(b"OpusHead") {
        (48_000.0, f64::from(le_u16(packet, 10)?))
    } else if packet.starts_with(b"\x01vorbis") {
        (f64::from(le_u32(packet, 12)?), 0.0)
    } else {
        return None;
    };
    if rate <= 0.0 {
        return None;
    }
    // The last page's granule position counts the samples up to its end.
    let at = tail.windows(4).rposition(|w| w == b"OggS")?;
    let page = tail.get(at..)?;
    if page.get(4) != Some(&0) {
        return None;
    }
    let granule = i64::from_le_bytes(page.get(6..14)?.try_into().ok()?);
    if granule < 0 {
        return None;
    }
    Some(((granule as f64) - pre_skip).max(0.0) / rate)
}

/// The length of the MPEG audio layer III frame whose header is at `at`, if one is there.
fn frame_len(b: &[u8], at: usize) -> Option<usize> {
    let h = be_u32(b, at)?;
    if h >> 21 != 0x7ff {
        return None;
    }
    let version = (h >> 19) & 3;
    let layer = (h >> 17) & 3;
    let bitrate_index = ((h >> 12) & 0xf) as usize;
    let rate_index = ((h >> 10) & 3) as usize;
    let padding = ((h >> 9) & 1) as usize;
    if layer != 1 || version == 1 || rate_index == 3 || bitrate_index == 0 || bitrate_index == 15 {
        return None;
    }
    let kbps: [usize; 15] = if version == 3 {
        [
            0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320,
        ]
    } else {
        [0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160]
    };
    let base = [44_100usize, 48_000, 32_000];
    let rate = base.get(rate_index)?
        >> match version {
            3 => 0,
            2 => 1,
            _ => 2,
        };
    let coefficient = if version == 3 { 144 } else { 72 };
    let n = coefficient * 1000 * kbps.get(bitrate_index)? / rate + padding;
    (n > 4).then_some(n)
}

fn mp3_secs(head: &[u8], len: u64) -> Option<f64> {
    // Skip an ID3v2 tag (its size is four 7-bit bytes).
    let mut at = 0usize;
    if head.starts_with(b"ID3") {
        let s = head.get(6..10)?;
        let size = s
            .iter()
            .fold(0usize, |acc, b| (acc << 7) | usize::from(b & 0x7f));
        at = 10 + size;
    }
    // The first frame header (11 sync bits) right after the tag, or after a little padding;
    // and a second frame header where the first frame ends, so random bytes are not taken
    // for audio.
    let window = head.len().saturating_sub(4).min(at + 4096);
    let start = (at..window)
        .find(|&i| frame_len(head, i).is_some_and(|n| frame_len(head, i + n).is_some()))?;
    let h = be_u32(head, start)?;
    let version = (h >> 19) & 3; // 3: MPEG-1, 2: MPEG-2, 0: MPEG-2.5
    let layer = (h >> 17) & 3; // 1: layer III
    let bitrate_index = ((h >> 12) & 0xf) as usize;
    let rate_index = ((h >> 10) & 3) as usize;
    let mono = (h >> 6) & 3 == 3;
    if layer != 1 || version == 1 || rate_index == 3 {
        return None;
    }
    let base_rate = [44_100.0, 48_000.0, 32_000.0];
    let rate = base_rate.get(rate_index)?
        / match version {
            3 => 1.0,
            2 => 2.0,
            _ => 4.0,
        };
    let samples_per_frame = if version == 3 { 1152.0 } else { 576.0 };
    // A Xing or Info header in the first frame gives the frame count.
    let side = match (version == 3, mono) {
        (true, false) => 32,
        (true, true) => 17,
        (false, false) => 17,
        (false, true) => 9,
    };
    let xing = start + 4 + side;
    if let Some(tag) = head.get(xing..xing + 4) {
        if tag == b"Xing" || tag == b"Info" {
            let flags = be_u32(head, xing + 4)?;
            if flags & 1 == 1 {
                let frames = f64::from(be_u32(head, xing + 8)?);
                return Some(frames * samples_per_frame / rate);
            }
        }
    }
    // Otherwise a constant bit rate: the audio bytes over the byte rate.
    let kbps: [u32; 15] = if version == 3 {
        [
            0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320,
        ]
    } else {
        [0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160]
    };
    let kbps = f64::from(*kbps.get(bitrate_index).filter(|k| **k > 0)?);
    let audio = len.saturating_sub(start as u64) as f64;
    Some(audio * 8.0 / (kbps * 1000.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ogg_page(granule: i64, packet: &[u8]) -> Vec<u8> {
        let mut p = b"OggS".to_vec();
        p.push(0);
        p.push(0);
        p.extend_from_slice(&granule.to_le_bytes());
        p.extend_from_slice(&[0; 12]);
        p.push(1);
        p.push(u8::try_from(packet.len()).unwrap_or(255));
        p.extend_from_slice(packet);
        p
    }

    #[test]
    fn opus_length_comes_from_the_last_granule_less_the_pre_skip() -> std::io::Result<()> {
        let mut head = b"OpusHead".to_vec();
        head.extend_from_slice(&[1, 1]);
        head.extend_from_slice(&312u16.to_le_bytes());
        head.extend_from_slice(&48_000u32.to_le_bytes());
        let mut file = ogg_page(0, &head);
        file.extend(std::iter::repeat_n(0x55, 100_000));
        file.extend(ogg_page(42 * 48_000 + 312, b"audio"));
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("note.ogg");
        std::fs::write(&path, &file)?;
        assert_eq!(audio_duration_secs(&path), Some(42));
        Ok(())
    }

    #[test]
    fn cbr_mp3_length_comes_from_its_bit_rate_and_junk_is_none() -> std::io::Result<()> {
        // MPEG-1 layer III, 128 kbit/s, 44.1 kHz, stereo: FF FB 90 00, 417-byte frames.
        let mut file = Vec::new();
        while file.len() < 128_000 / 8 * 30 {
            file.extend_from_slice(&[0xff, 0xfb, 0x90, 0x00]);
            file.extend_from_slice(&[0u8; 413]);
        }
        file.truncate(128_000 / 8 * 30);
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("note.mp3");
        std::fs::write(&path, &file)?;
        assert_eq!(audio_duration_secs(&path), Some(30));
        std::fs::write(&path, b"not audio at all")?;
        assert_eq!(audio_duration_secs(&path), None);
        Ok(())
    }
}
