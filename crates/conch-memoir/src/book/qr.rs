//! QR codes as PNG images, the same picture for the EPUB and the PDF.

use qrcode::{Color, EcLevel, QrCode};

use crate::{MemoirError, Result};

/// Quiet zone around the code, in modules (the QR specification asks for four).
const QUIET_MODULES: usize = 4;

/// A black-on-white PNG of `text` as a QR code (error correction level M), `module_pixels`
/// pixels per module.
pub fn qr_code_png(text: &str, module_pixels: usize) -> Result<Vec<u8>> {
    if module_pixels == 0 || module_pixels > 64 {
        return Err(MemoirError::Export(format!(
            "QR module size {module_pixels} px is outside 1..=64"
        )));
    }
    let code = QrCode::with_error_correction_level(text.as_bytes(), EcLevel::M).map_err(|err| {
        MemoirError::Export(format!(
            "cannot make a QR code of {} bytes: {err}",
            text.len()
        ))
    })?;
    let modules = code.width();
    let colors = code.to_colors();
    let side = (modules + 2 * QUIET_MODULES) * module_pixels;
    let mut pixels = vec![255u8; side * side];
    for (index, color) in colors.iter().enumerate() {
        if *color != Color::Dark {
            continue;
        }
        let (x0, y0) = (
            (index % modules + QUIET_MODULES) * module_pixels,
            (index / modules + QUIET_MODULES) * module_pixels,
        );
        for y in y0..y0 + module_pixels {
            pixels[y * side + x0..y * side + x0 + module_pixels].fill(0);
        }
    }
    let mut png_bytes = Vec::new();
    let side_u32 =
        u32::try_from(side).map_err(|_| MemoirError::Export("QR image too large".into()))?;
    let mut encoder = png::Encoder::new(&mut png_bytes, side_u32, side_u32);
    encoder.set_color(png::ColorType::Grayscale);
    encoder.set_depth(png::BitDepth::Eight);
    let png_error =
        |err: png::EncodingError| MemoirError::Export(format!("writing the QR PNG: {err}"));
    let mut writer = encoder.write_header().map_err(png_error)?;
    writer.write_image_data(&pixels).map_err(png_error)?;
    writer.finish().map_err(png_error)?;
    Ok(png_bytes)
}
