//! What the plotting commands share: a system font for plotters' text, and PNGs written atomically.

use std::path::Path;

use anyhow::Result;

/// Registers a system sans-serif font for plotters' text (pure-Rust rendering, no font library needed).
pub fn load_font() -> bool {
    const CANDIDATES: &[&str] = &[
        "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
        "/usr/share/fonts/TTF/DejaVuSans.ttf",
        "/usr/share/fonts/dejavu/DejaVuSans.ttf",
        "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
        "/System/Library/Fonts/Supplemental/Arial.ttf",
        "C:\\Windows\\Fonts\\arial.ttf",
    ];
    for path in CANDIDATES {
        if let Ok(bytes) = std::fs::read(path) {
            let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
            if plotters::style::register_font("sans-serif", plotters::style::FontStyle::Normal, bytes).is_ok() {
                return true;
            }
        }
    }
    false
}

/// Writes an RGB buffer as a PNG, atomically: the file appears whole or not at all.
pub fn save_png(path: &Path, w: u32, h: u32, rgb: Vec<u8>) -> Result<()> {
    let img = image::RgbImage::from_raw(w, h, rgb).ok_or_else(|| anyhow::anyhow!("image buffer size"))?;
    let mut png = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .map_err(|e| anyhow::anyhow!("encoding {}: {e}", path.display()))?;
    weights::fsutil::write_atomic(path, |f| std::io::Write::write_all(f, &png))
        .map_err(|e: std::io::Error| anyhow::anyhow!("writing {}: {e}", path.display()))
}
