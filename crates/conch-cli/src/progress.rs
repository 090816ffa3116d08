//! Loading feedback: reading the model's bytes once with a progress bar, so the first reply is
//! not slowed by page faults and a person sees that something is happening.

use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use std::io::{IsTerminal, Read};
use std::path::Path;

pub fn warm_page_cache(path: &Path) -> Result<()> {
    let files: Vec<_> = if path.is_dir() {
        std::fs::read_dir(path)
            .with_context(|| format!("reading {}", path.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
            .collect()
    } else {
        vec![path.to_path_buf()]
    };
    let total: u64 = files
        .iter()
        .filter_map(|f| f.metadata().ok())
        .map(|m| m.len())
        .sum();
    let bar = if std::io::stderr().is_terminal() {
        let bar = ProgressBar::new(total);
        bar.set_style(
            ProgressStyle::with_template("loading {bar:40} {bytes}/{total_bytes} {msg}")
                .expect("valid template"),
        );
        bar
    } else {
        ProgressBar::hidden()
    };
    let mut buf = vec![0u8; 4 << 20];
    for f in &files {
        let mut file =
            std::fs::File::open(f).with_context(|| format!("opening {}", f.display()))?;
        loop {
            let n = file
                .read(&mut buf)
                .with_context(|| format!("reading {}", f.display()))?;
            if n == 0 {
                break;
            }
            bar.inc(n as u64);
        }
    }
    bar.finish_and_clear();
    Ok(())
}
