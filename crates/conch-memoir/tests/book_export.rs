//! End-to-end checks of the book exports with independent tools: `epubcheck` validates the EPUB,
//! poppler's `pdftotext` and `pdftoppm` read the PDF back, and `rqrr` decodes the QR codes from
//! the images in the book (for the PDF: from the rendered page).
//!
//! Without the tools (Debian: epubcheck, poppler-utils, fonts-wqy-microhei or fonts-noto-cjk)
//! these tests print why they skip, unless CONCH_REQUIRE_BOOK_TOOLS=1 makes that a failure.

use std::io::{Cursor, Read};
use std::path::{Path, PathBuf};
use std::process::Command;

use chrono::TimeZone;
use conch_memoir::book::{
    render_epub, render_markdown, render_pdf, Book, BookChapter, BookFont, Photo,
};
use conch_memoir::Language;

const CHILDHOOD_URL: &str = "https://family.example/recordings/walter/childhood?play=1&lang=en";
const SUZHOU_URL: &str = "https://family.example/recordings/walter/suzhou";
/// Long enough for a denser QR code, which is then printed larger.
const ADVICE_URL: &str = "https://family.example/recordings/walter/advice-to-grandchildren?\
    session=2026-11-29T10%3A15%3A00Z&token=3f9a1c7e5b2d4086a1e3c5b7d9f20468&start=00%3A12%3A34&lang=en";

/// Skips (printing why) or, with CONCH_REQUIRE_BOOK_TOOLS=1, fails.
fn unavailable(reason: &str) {
    if std::env::var("CONCH_REQUIRE_BOOK_TOOLS").is_ok_and(|value| value == "1") {
        panic!("{reason} (CONCH_REQUIRE_BOOK_TOOLS=1)");
    }
    eprintln!("skipping: {reason}");
}

fn find_tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

fn scratch_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("conch-memoir-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A small photo: a gradient PNG.
fn photo_png() -> Vec<u8> {
    let (width, height) = (60u32, 40u32);
    let pixels: Vec<u8> = (0..height)
        .flat_map(|y| (0..width).flat_map(move |x| [(x * 4) as u8, (y * 6) as u8, 128]))
        .collect();
    let mut bytes = Vec::new();
    let mut encoder = png::Encoder::new(&mut bytes, width, height);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    encoder
        .write_header()
        .unwrap()
        .write_image_data(&pixels)
        .unwrap();
    bytes
}

/// Distinct sentences, enough to run a chapter over several pages.
fn long_english_chapter() -> Vec<String> {
    (1..=40)
        .map(|n| {
            format!(
                "Paragraph {n}: on Saturday number {n} my uncle Harold let me carry the flour sacks \
                 from the cart to the back door of the bakery, and I counted every step out loud."
            )
        })
        .collect()
}

fn sample_book(language: Language) -> Book {
    Book {
        title: "Bread & Rivers".into(),
        subtitle: Some("The life of Walter Green".into()),
        author: "Walter Green".into(),
        dedication: Some("For Anna, Tom and little Mei.\n献给我的孙女小美。".into()),
        language,
        identifier: Some("urn:uuid:6f1c5a4e-8d0e-4c2b-9a57-3b8f2f0d9e11".into()),
        chapters: vec![
            BookChapter {
                title: "Childhood in Leeds".into(),
                paragraphs: long_english_chapter(),
                photos: vec![Photo {
                    image: photo_png(),
                    caption: "The bakery on Kirkgate, 1950".into(),
                }],
                recordings_url: Some(CHILDHOOD_URL.into()),
            },
            BookChapter {
                title: "苏州的小河".into(),
                paragraphs: vec![
                    "我是一九四八年在苏州出生的，家门口有一条小河。".into(),
                    "夏天的晚上，外婆坐在河边给我们讲故事，一讲就是大半夜。".into(),
                ],
                photos: vec![],
                recordings_url: Some(SUZHOU_URL.into()),
            },
            BookChapter {
                title: "Advice".into(),
                paragraphs: vec!["Be kind, and write things down.".into()],
                photos: vec![],
                recordings_url: Some(ADVICE_URL.into()),
            },
        ],
    }
}

/// The texts of all QR codes found in an image of 8-bit gray pixels.
fn decode_qr_codes(width: usize, height: usize, gray: &[u8]) -> Vec<String> {
    let mut prepared =
        rqrr::PreparedImage::prepare_from_greyscale(width, height, |x, y| gray[y * width + x]);
    prepared
        .detect_grids()
        .iter()
        .filter_map(|grid| grid.decode().ok())
        .map(|(_, text)| text)
        .collect()
}

/// A PNG's pixels as 8-bit gray.
fn png_to_gray(bytes: &[u8]) -> (usize, usize, Vec<u8>) {
    let mut decoder = png::Decoder::new(Cursor::new(bytes));
    decoder.set_transformations(png::Transformations::normalize_to_color8());
    let mut reader = decoder.read_info().unwrap();
    let mut buffer = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buffer).unwrap();
    let channels = info.color_type.samples();
    let gray = buffer[..info.buffer_size()]
        .chunks(channels)
        .map(|pixel| match channels {
            1 | 2 => pixel[0],
            _ => {
                ((u32::from(pixel[0]) * 299
                    + u32::from(pixel[1]) * 587
                    + u32::from(pixel[2]) * 114)
                    / 1000) as u8
            }
        })
        .collect();
    (info.width as usize, info.height as usize, gray)
}

fn without_whitespace(text: &str) -> String {
    text.chars().filter(|c| !c.is_whitespace()).collect()
}

fn collapse_whitespace(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn modified() -> chrono::DateTime<chrono::Utc> {
    chrono::Utc
        .with_ymd_and_hms(2026, 11, 29, 12, 0, 0)
        .unwrap()
}

fn read_zip_entry(epub: &[u8], name: &str) -> Vec<u8> {
    let mut archive = zip::ZipArchive::new(Cursor::new(epub)).unwrap();
    let mut entry = archive
        .by_name(name)
        .unwrap_or_else(|_| panic!("{name} missing from the EPUB"));
    let mut bytes = Vec::new();
    entry.read_to_end(&mut bytes).unwrap();
    bytes
}

#[test]
fn epub_has_mimetype_first_and_qr_codes_that_decode_to_the_urls() {
    let epub = render_epub(&sample_book(Language::English), modified()).unwrap();
    // OCF: the first local file header names "mimetype", stored, its content right after.
    assert_eq!(&epub[..4], b"PK\x03\x04");
    assert_eq!(&epub[30..38], b"mimetype");
    assert_eq!(&epub[38..58], b"application/epub+zip");

    for (chapter, url) in [(1, CHILDHOOD_URL), (2, SUZHOU_URL), (3, ADVICE_URL)] {
        let png_bytes = read_zip_entry(&epub, &format!("EPUB/images/qr-{chapter:02}.png"));
        let (width, height, gray) = png_to_gray(&png_bytes);
        assert_eq!(decode_qr_codes(width, height, &gray), [url]);
    }
    let nav = String::from_utf8(read_zip_entry(&epub, "EPUB/nav.xhtml")).unwrap();
    assert!(
        nav.contains("<a href=\"chapter-02.xhtml\">苏州的小河</a>"),
        "{nav}"
    );
    let chapter = String::from_utf8(read_zip_entry(&epub, "EPUB/chapter-01.xhtml")).unwrap();
    assert!(
        chapter.contains("https://family.example/recordings/walter/childhood?play=1&amp;lang=en")
    );
    assert!(chapter.contains("Paragraph 40: on Saturday number 40"));
    assert_eq!(
        read_zip_entry(&epub, "EPUB/images/photo-01-1.png"),
        photo_png()
    );
}

#[test]
fn epub_passes_epubcheck_in_both_languages() {
    let Some(epubcheck) = find_tool("epubcheck") else {
        unavailable("epubcheck is not installed (Debian package epubcheck)");
        return;
    };
    let dir = scratch_dir("epubcheck");
    for language in [Language::English, Language::SimplifiedChinese] {
        let path = dir.join(format!("book-{}.epub", language.tag()));
        std::fs::write(
            &path,
            render_epub(&sample_book(language), modified()).unwrap(),
        )
        .unwrap();
        let output = run_epubcheck(&epubcheck, &path);
        let report = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(
            output.status.success(),
            "epubcheck rejected {}:\n{report}",
            path.display()
        );
        assert!(
            !report.contains("WARNING") && !report.contains("ERROR"),
            "epubcheck complained:\n{report}"
        );
    }
    std::fs::remove_dir_all(dir).ok();
}

/// Debian ships epubcheck as an executable jar, which runs directly only where binfmt_misc knows
/// jars; run it with `java -jar` then.
fn run_epubcheck(epubcheck: &Path, epub: &Path) -> std::process::Output {
    let is_jar = std::fs::read(epubcheck).is_ok_and(|bytes| bytes.starts_with(b"PK"));
    let mut command = if is_jar {
        let mut java = Command::new("java");
        java.arg("-jar").arg(epubcheck);
        java
    } else {
        Command::new(epubcheck)
    };
    command
        .arg(epub)
        .output()
        .expect("epubcheck could not be started (java missing?)")
}

#[test]
fn pdf_text_contents_and_qr_codes_read_back() {
    let font = match BookFont::from_system() {
        Ok(font) => font,
        Err(err) => return unavailable(&err.to_string()),
    };
    let (Some(pdftotext), Some(pdftoppm)) = (find_tool("pdftotext"), find_tool("pdftoppm")) else {
        return unavailable("pdftotext/pdftoppm are not installed (Debian package poppler-utils)");
    };
    let book = sample_book(Language::English);
    let pdf = render_pdf(&book, &font).unwrap();
    let dir = scratch_dir("pdf");
    let path = dir.join("book.pdf");
    std::fs::write(&path, &pdf).unwrap();

    let text_path = dir.join("book.txt");
    let status = Command::new(pdftotext)
        .args(["-layout", "-enc", "UTF-8"])
        .arg(&path)
        .arg(&text_path)
        .status()
        .unwrap();
    assert!(status.success(), "pdftotext failed on the PDF");
    let text = std::fs::read_to_string(&text_path).unwrap();
    // pdftotext ends each page with a form feed.
    let pages: Vec<&str> = text
        .split('\u{c}')
        .filter(|page| !page.trim().is_empty())
        .collect();
    // Running text, without the page-number footers that interrupt paragraphs at page breaks.
    let running_text: String = text
        .lines()
        .filter(|line| {
            !line
                .trim()
                .chars()
                .all(|c| c.is_ascii_digit() || c == '\u{c}')
                || line.trim().is_empty()
        })
        .collect::<Vec<_>>()
        .join("\n");
    let flat = collapse_whitespace(&running_text);
    assert!(
        pages[0].contains("Bread & Rivers") && pages[0].contains("by Walter Green"),
        "title page: {}",
        pages[0]
    );
    assert!(
        without_whitespace(pages[1]).contains("献给我的孙女小美。"),
        "dedication page: {}",
        pages[1]
    );
    for paragraph in long_english_chapter() {
        assert!(
            flat.contains(&paragraph),
            "English paragraph missing: {paragraph}"
        );
    }
    let flat_cjk = without_whitespace(&running_text);
    for paragraph in &book.chapters[1].paragraphs {
        assert!(
            flat_cjk.contains(paragraph.as_str()),
            "Chinese paragraph missing: {paragraph}"
        );
    }

    // The contents page lists every chapter with the page it starts on.
    let contents = pages
        .iter()
        .position(|page| page.contains("Contents"))
        .expect("no contents page");
    for chapter in &book.chapters {
        let line = pages[contents]
            .lines()
            .find(|line| line.contains(&chapter.title))
            .unwrap_or_else(|| panic!("{} is not in the contents", chapter.title));
        let number: usize = line
            .split_whitespace()
            .last()
            .unwrap()
            .parse()
            .expect("no page number in the contents");
        assert!(
            number > contents + 1,
            "chapter {} placed on page {number}",
            chapter.title
        );
        assert!(
            pages[number - 1].contains(&chapter.title),
            "page {number} does not start {}",
            chapter.title
        );
    }
    let childhood_start = pages
        .iter()
        .position(|page| page.contains("Chapter 1"))
        .unwrap();
    let suzhou_start = pages
        .iter()
        .position(|page| page.contains("Chapter 2"))
        .unwrap();
    assert!(
        suzhou_start > childhood_start + 1,
        "the long chapter should span pages"
    );

    // Render the pages at print resolution and scan them like a phone would; rqrr misses codes at
    // some scales, so a page where it finds none is scanned again at another resolution.
    let mut found = Vec::new();
    for page in 1..=pages.len() {
        let codes_at = |dpi: &str| {
            let prefix = dir.join(format!("page-{page}-{dpi}"));
            let page_arg = page.to_string();
            let status = Command::new(&pdftoppm)
                .args([
                    "-r",
                    dpi,
                    "-gray",
                    "-png",
                    "-singlefile",
                    "-f",
                    &page_arg,
                    "-l",
                    &page_arg,
                ])
                .arg(&path)
                .arg(&prefix)
                .status()
                .unwrap();
            assert!(status.success(), "pdftoppm failed on page {page}");
            let (width, height, gray) =
                png_to_gray(&std::fs::read(prefix.with_extension("png")).unwrap());
            decode_qr_codes(width, height, &gray)
        };
        let codes = codes_at("300");
        found.extend(if codes.is_empty() {
            codes_at("200")
        } else {
            codes
        });
    }
    assert_eq!(found, [CHILDHOOD_URL, SUZHOU_URL, ADVICE_URL]);
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn chinese_pdf_sets_chinese_labels_and_text() {
    let font = match BookFont::from_system() {
        Ok(font) => font,
        Err(err) => return unavailable(&err.to_string()),
    };
    let Some(pdftotext) = find_tool("pdftotext") else {
        return unavailable("pdftotext is not installed (Debian package poppler-utils)");
    };
    let mut book = sample_book(Language::SimplifiedChinese);
    book.title = "面包与河流".into();
    let dir = scratch_dir("pdf-zh");
    let path = dir.join("book.pdf");
    std::fs::write(&path, render_pdf(&book, &font).unwrap()).unwrap();
    let output = Command::new(pdftotext)
        .arg("-enc")
        .arg("UTF-8")
        .arg(&path)
        .arg("-")
        .output()
        .unwrap();
    let text = without_whitespace(&String::from_utf8(output.stdout).unwrap());
    for expected in [
        "面包与河流",
        "目录",
        "第2章",
        "苏州的小河",
        "夏天的晚上，外婆坐在河边给我们讲故事，一讲就是大半夜。",
        "扫描二维码",
    ] {
        assert!(
            text.contains(expected),
            "{expected} missing from the Chinese PDF"
        );
    }
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn markdown_export_lists_chapters_and_recordings() {
    let export = render_markdown(&sample_book(Language::English)).unwrap();
    let md = &export.markdown;
    assert!(md.contains("3. [Advice](#chapter-3)"));
    assert!(md.contains("## Chapter 2: 苏州的小河"));
    assert!(md.contains(&format!("<{CHILDHOOD_URL}>")));
    assert!(md.contains("![The bakery on Kirkgate, 1950](photos/chapter-01-1.png)"));
    assert_eq!(export.files.len(), 1);
}

#[test]
fn bad_books_are_errors_not_panics() {
    let mut book = sample_book(Language::English);
    book.chapters[0].photos[0].image = b"not an image".to_vec();
    assert!(render_epub(&book, modified())
        .unwrap_err()
        .to_string()
        .contains("photo 1 of chapter 1"));
    let mut book = sample_book(Language::English);
    book.chapters.clear();
    assert!(render_markdown(&book)
        .unwrap_err()
        .to_string()
        .contains("no chapters"));
    // A PNG signature on garbage passes the format sniffing but not the PDF's image reader.
    if let Ok(font) = BookFont::from_system() {
        let mut book = sample_book(Language::English);
        book.chapters[0].photos[0].image = b"\x89PNG\r\n\x1a\ngarbage".to_vec();
        let err = render_pdf(&book, &font).unwrap_err().to_string();
        assert!(err.contains("photo 1 of chapter 1"), "{err}");
    }
}
