//! Just enough PNG for character cards: walking the chunks (every length bounded and every CRC
//! checked), reading and replacing `tEXt` chunks, and writing a small solid-colour image.

const SIGNATURE: &[u8; 8] = b"\x89PNG\r\n\x1a\n";
/// No chunk in a card needs more; larger lengths are corrupt or hostile.
const MAX_CHUNK: usize = 64 << 20;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PngError {
    #[error("not a PNG file (the 8-byte signature is missing)")]
    Signature,
    #[error("the PNG is cut off inside chunk {index}")]
    Truncated { index: usize },
    #[error("PNG chunk {index} ('{kind}') has a wrong CRC; the file is damaged")]
    Crc { index: usize, kind: String },
    #[error("PNG chunk {index} is {len} bytes, more than the {MAX_CHUNK} allowed")]
    TooLarge { index: usize, len: usize },
    #[error("the PNG has no IEND chunk")]
    NoEnd,
}

struct Chunk<'a> {
    kind: [u8; 4],
    data: &'a [u8],
    /// The whole chunk (length, type, data, CRC) as it lies in the file.
    raw: &'a [u8],
}

fn crc32(parts: &[&[u8]]) -> u32 {
    static TABLE: std::sync::OnceLock<[u32; 256]> = std::sync::OnceLock::new();
    let table = TABLE.get_or_init(|| {
        let mut table = [0u32; 256];
        for (n, entry) in table.iter_mut().enumerate() {
            let mut c = n as u32;
            for _ in 0..8 {
                c = if c & 1 != 0 {
                    0xedb8_8320 ^ (c >> 1)
                } else {
                    c >> 1
                };
            }
            *entry = c;
        }
        table
    });
    let mut crc = 0xffff_ffffu32;
    for part in parts {
        for &b in *part {
            crc = table[((crc ^ b as u32) & 0xff) as usize] ^ (crc >> 8);
        }
    }
    crc ^ 0xffff_ffff
}

/// The chunks up to and including IEND.
fn chunks(png: &[u8]) -> Result<Vec<Chunk<'_>>, PngError> {
    if !png.starts_with(SIGNATURE) {
        return Err(PngError::Signature);
    }
    let mut chunks = Vec::new();
    let mut at = SIGNATURE.len();
    loop {
        let index = chunks.len();
        let header = png.get(at..at + 8).ok_or(PngError::Truncated { index })?;
        let len = u32::from_be_bytes([header[0], header[1], header[2], header[3]]) as usize;
        if len > MAX_CHUNK {
            return Err(PngError::TooLarge { index, len });
        }
        let end = at + 12 + len;
        let raw = png.get(at..end).ok_or(PngError::Truncated { index })?;
        let kind = [raw[4], raw[5], raw[6], raw[7]];
        let data = &raw[8..8 + len];
        let stored = u32::from_be_bytes([raw[8 + len], raw[9 + len], raw[10 + len], raw[11 + len]]);
        if crc32(&[&kind, data]) != stored {
            return Err(PngError::Crc {
                index,
                kind: String::from_utf8_lossy(&kind).into_owned(),
            });
        }
        chunks.push(Chunk { kind, data, raw });
        at = end;
        if &kind == b"IEND" {
            return Ok(chunks);
        }
        if at >= png.len() {
            return Err(PngError::NoEnd);
        }
    }
}

fn write_chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    out.extend_from_slice(kind);
    out.extend_from_slice(data);
    out.extend_from_slice(&crc32(&[kind, data]).to_be_bytes());
}

/// The `tEXt` chunks as (keyword, text), Latin-1 decoded as the PNG specification says.
pub fn png_text_chunks(png: &[u8]) -> Result<Vec<(String, String)>, PngError> {
    Ok(chunks(png)?
        .into_iter()
        .filter(|c| &c.kind == b"tEXt")
        .filter_map(|c| {
            let nul = c.data.iter().position(|&b| b == 0)?;
            let latin1 = |bytes: &[u8]| bytes.iter().map(|&b| b as char).collect::<String>();
            Some((latin1(&c.data[..nul]), latin1(&c.data[nul + 1..])))
        })
        .collect())
}

/// `png` with its `tEXt` chunks named `keyword` replaced by one holding `text` (which must be
/// Latin-1; cards are base64), placed just before IEND.
pub fn with_text_chunk(png: &[u8], keyword: &str, text: &str) -> Result<Vec<u8>, PngError> {
    let chunks = chunks(png)?;
    let mut out = Vec::with_capacity(png.len() + text.len() + 32);
    out.extend_from_slice(SIGNATURE);
    let mut data = Vec::with_capacity(keyword.len() + 1 + text.len());
    data.extend(keyword.chars().map(|c| c as u8));
    data.push(0);
    data.extend(text.chars().map(|c| c as u8));
    for chunk in &chunks {
        let same_keyword = &chunk.kind == b"tEXt"
            && chunk.data.len() > keyword.len()
            && &chunk.data[..keyword.len()] == keyword.as_bytes()
            && chunk.data[keyword.len()] == 0;
        if same_keyword {
            continue;
        }
        if &chunk.kind == b"IEND" {
            write_chunk(&mut out, b"tEXt", &data);
        }
        out.extend_from_slice(chunk.raw);
    }
    Ok(out)
}

/// A `size`×`size` PNG of one colour (8-bit RGB), deflate in stored blocks so no compressor is needed.
pub(crate) fn solid_png(size: u32, rgb: [u8; 3]) -> Vec<u8> {
    // Each scanline: filter type 0 (none), then the pixels.
    let line: Vec<u8> = std::iter::once(0)
        .chain(rgb.repeat(size as usize))
        .collect();
    let raw = line.repeat(size as usize);
    let mut zlib = vec![0x78, 0x01];
    let blocks: Vec<&[u8]> = raw.chunks(65535).collect();
    for (i, block) in blocks.iter().enumerate() {
        zlib.push((i + 1 == blocks.len()) as u8);
        let len = block.len() as u16;
        zlib.extend_from_slice(&len.to_le_bytes());
        zlib.extend_from_slice(&(!len).to_le_bytes());
        zlib.extend_from_slice(block);
    }
    let (mut a, mut b) = (1u32, 0u32);
    for &byte in &raw {
        a = (a + byte as u32) % 65521;
        b = (b + a) % 65521;
    }
    zlib.extend_from_slice(&((b << 16) | a).to_be_bytes());
    let mut header = Vec::with_capacity(13);
    header.extend_from_slice(&size.to_be_bytes());
    header.extend_from_slice(&size.to_be_bytes());
    header.extend_from_slice(&[8, 2, 0, 0, 0]);
    let mut png = SIGNATURE.to_vec();
    write_chunk(&mut png, b"IHDR", &header);
    write_chunk(&mut png, b"IDAT", &zlib);
    write_chunk(&mut png, b"IEND", &[]);
    png
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc_matches_the_png_specification_check_value() {
        // The standard CRC-32 check value: crc32("123456789") = 0xCBF43926.
        assert_eq!(crc32(&[b"123456789"]), 0xcbf4_3926);
        // IEND's CRC, fixed by the PNG specification.
        assert_eq!(crc32(&[b"IEND"]), 0xae42_6082);
    }

    #[test]
    fn text_chunks_round_trip_and_replace() {
        let png = solid_png(4, [10, 20, 30]);
        assert!(png_text_chunks(&png).unwrap().is_empty());
        let one = with_text_chunk(&png, "chara", "aGVsbG8=").unwrap();
        let two = with_text_chunk(&one, "chara", "d29ybGQ=").unwrap();
        assert_eq!(
            png_text_chunks(&two).unwrap(),
            vec![("chara".to_string(), "d29ybGQ=".to_string())]
        );
        assert!(two.ends_with(&[0, 0, 0, 0, b'I', b'E', b'N', b'D', 0xae, 0x42, 0x60, 0x82]));
    }

    #[test]
    fn damaged_files_are_errors() {
        let png = with_text_chunk(&solid_png(2, [0, 0, 0]), "chara", "e30=").unwrap();
        assert_eq!(png_text_chunks(b"GIF89a").unwrap_err(), PngError::Signature);
        for cut in [10, 20, png.len() - 1] {
            assert!(matches!(
                png_text_chunks(&png[..cut]),
                Err(PngError::Truncated { .. })
            ));
        }
        let mut flipped = png.clone();
        let last_text_byte = png.len() - 12 - 5;
        flipped[last_text_byte] ^= 1;
        assert!(matches!(
            png_text_chunks(&flipped),
            Err(PngError::Crc { .. })
        ));
        let mut huge = png.clone();
        huge[8..12].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(matches!(
            png_text_chunks(&huge),
            Err(PngError::TooLarge { .. })
        ));
    }
}
