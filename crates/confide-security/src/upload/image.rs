//! An image's pixel size, read from its header alone (PNG `IHDR`, JPEG start-of-frame, WebP
//! `VP8 `/`VP8L`/`VP8X`): a few bytes say how much memory a browser would need to decode it, so
//! a tiny file cannot make visitors' browsers decode a gigantic picture. Nothing is decoded.

use std::io::{self, Read, Seek, SeekFrom};

use serde::{Deserialize, Serialize};

use super::FileKind;

/// An image's width and height in pixels, as its header declares them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dimensions {
    pub width: u32,
    pub height: u32,
}

/// JPEG segments walked at most before the frame header: real files have a dozen or so.
const MAX_JPEG_SEGMENTS: usize = 1024;

/// The dimensions of an image of `kind` (`size` bytes, read from its start); `Ok(None)` when
/// the header is missing, cut short or malformed, and for kinds that are not images.
pub(super) fn dimensions<R: Read + Seek>(
    kind: FileKind,
    content: &mut R,
    size: u64,
) -> io::Result<Option<Dimensions>> {
    content.seek(SeekFrom::Start(0))?;
    let found = match kind {
        FileKind::Png => png(content)?,
        FileKind::Jpeg => jpeg(content, size)?,
        FileKind::Webp => webp(content)?,
        _ => None,
    };
    Ok(found.filter(|d| d.width > 0 && d.height > 0))
}

/// Reads exactly `N` bytes; `None` at the end of the content.
fn read_array<const N: usize, R: Read>(content: &mut R) -> io::Result<Option<[u8; N]>> {
    let mut buffer = [0u8; N];
    match content.read_exact(&mut buffer) {
        Ok(()) => Ok(Some(buffer)),
        Err(err) if err.kind() == io::ErrorKind::UnexpectedEof => Ok(None),
        Err(err) => Err(err),
    }
}

/// The first chunk of a PNG is `IHDR`, 13 bytes, width and height first (big-endian).
fn png<R: Read>(content: &mut R) -> io::Result<Option<Dimensions>> {
    let Some(head) = read_array::<24, _>(content)? else {
        return Ok(None);
    };
    if &head[8..16] != b"\0\0\0\x0dIHDR" {
        return Ok(None);
    }
    let width = u32::from_be_bytes([head[16], head[17], head[18], head[19]]);
    let height = u32::from_be_bytes([head[20], head[21], head[22], head[23]]);
    Ok(Some(Dimensions { width, height }))
}

/// Walks the segments after `SOI` to the first start-of-frame marker, which holds the height
/// and width (big-endian); a scan or the end before it means there is none.
fn jpeg<R: Read + Seek>(content: &mut R, size: u64) -> io::Result<Option<Dimensions>> {
    let Some([0xFF, 0xD8]) = read_array::<2, _>(content)? else {
        return Ok(None);
    };
    for _ in 0..MAX_JPEG_SEGMENTS {
        let Some([0xFF, mut marker]) = read_array::<2, _>(content)? else {
            return Ok(None);
        };
        // Any number of 0xFF fill bytes may precede a marker.
        while marker == 0xFF {
            let Some([next]) = read_array::<1, _>(content)? else {
                return Ok(None);
            };
            marker = next;
        }
        match marker {
            // Markers without a length: TEM and the restart markers.
            0x01 | 0xD0..=0xD7 => continue,
            // A scan, the end, or a second start: no frame header came first.
            0xDA | 0xD9 | 0xD8 | 0x00 => return Ok(None),
            _ => {}
        }
        let Some(length) = read_array::<2, _>(content)? else {
            return Ok(None);
        };
        let length = u16::from_be_bytes(length);
        if length < 2 {
            return Ok(None);
        }
        // SOF0-SOF15, less DHT (C4), JPG (C8) and DAC (CC), which share the range.
        if matches!(marker, 0xC0..=0xCF) && !matches!(marker, 0xC4 | 0xC8 | 0xCC) {
            let Some(frame) = read_array::<5, _>(content)? else {
                return Ok(None);
            };
            let height = u32::from(u16::from_be_bytes([frame[1], frame[2]]));
            let width = u32::from(u16::from_be_bytes([frame[3], frame[4]]));
            return Ok(Some(Dimensions { width, height }));
        }
        let next = content.stream_position()? + u64::from(length) - 2;
        if next >= size {
            return Ok(None);
        }
        content.seek(SeekFrom::Start(next))?;
    }
    Ok(None)
}

/// A WebP's first chunk: `VP8 ` (lossy: 14-bit sizes after the key frame's start code),
/// `VP8L` (lossless: 14-bit sizes less one after its signature) or `VP8X` (extended: the
/// canvas, 24-bit sizes less one).
fn webp<R: Read>(content: &mut R) -> io::Result<Option<Dimensions>> {
    let Some(head) = read_array::<30, _>(content)? else {
        return Ok(None);
    };
    if &head[0..4] != b"RIFF" || &head[8..12] != b"WEBP" {
        return Ok(None);
    }
    let data = &head[20..30];
    let le16 = |at: usize| u32::from(u16::from_le_bytes([data[at], data[at + 1]]));
    let le24 = |at: usize| u32::from_le_bytes([data[at], data[at + 1], data[at + 2], 0]);
    let found = match &head[12..16] {
        // A key frame (bit 0 clear), then its start code.
        b"VP8 " if data[0] & 1 == 0 && data[3..6] == [0x9D, 0x01, 0x2A] => Some(Dimensions {
            width: le16(6) & 0x3FFF,
            height: le16(8) & 0x3FFF,
        }),
        b"VP8L" if data[0] == 0x2F => {
            let bits = u32::from_le_bytes([data[1], data[2], data[3], data[4]]);
            Some(Dimensions {
                width: (bits & 0x3FFF) + 1,
                height: ((bits >> 14) & 0x3FFF) + 1,
            })
        }
        b"VP8X" => Some(Dimensions {
            width: le24(4) + 1,
            height: le24(7) + 1,
        }),
        _ => None,
    };
    Ok(found)
}
