//! EPUB 3 export: XHTML pages for the title, dedication, contents and each chapter, with photos,
//! and per chapter a link and a QR code to the teller's recordings.

use std::io::{Cursor, Write};

use chrono::{DateTime, Utc};
use zip::write::SimpleFileOptions;
use zip::{CompressionMethod, ZipWriter};

use super::qr::qr_code_png;
use super::{Book, BookChapter};
use crate::text::escape_xml;
use crate::{MemoirError, Result};

/// Pixels per QR module in the embedded PNG: sharp when an e-reader scales it up or down.
const QR_MODULE_PIXELS: usize = 8;

const STYLESHEET: &str = "\
body { font-family: serif; line-height: 1.5; margin: 0 5%; }
h1 { font-size: 1.6em; margin: 0.5em 0 1em; }
p { margin: 0 0 0.8em; text-align: justify; }
.title-page, .dedication { text-align: center; margin-top: 30%; }
.title-page h1 { font-size: 2.2em; }
.subtitle { font-style: italic; font-size: 1.2em; }
.chapter-label { font-size: 0.9em; letter-spacing: 0.1em; color: #555; margin-bottom: 0; }
figure { margin: 1.5em 0; text-align: center; }
figure img { max-width: 100%; }
figcaption { font-size: 0.9em; font-style: italic; }
.recordings { margin-top: 2em; text-align: center; font-size: 0.9em; }
.recordings img { width: 8em; height: 8em; }
";

/// One file in the package, other than the fixed container files.
struct Item {
    id: String,
    href: String,
    media_type: &'static str,
    properties: Option<&'static str>,
    in_spine: bool,
    bytes: Vec<u8>,
}

/// The book as an EPUB 3 file (checked by `epubcheck` in the tests). `modified` becomes the
/// required `dcterms:modified` date, so that the same book and date give the same bytes.
pub fn render_epub(book: &Book, modified: DateTime<Utc>) -> Result<Vec<u8>> {
    book.validate()?;
    let lang = book.language.tag();
    let labels = book.language.labels();
    let mut items: Vec<Item> = Vec::new();
    let page =
        |id: &str, href: &str, properties: Option<&'static str>, in_spine: bool, body: String| {
            Item {
                id: id.to_string(),
                href: href.to_string(),
                media_type: "application/xhtml+xml",
                properties,
                in_spine,
                bytes: xhtml_page(lang, &book.title, &body).into_bytes(),
            }
        };

    let mut title_body = format!(
        "<section class=\"title-page\" epub:type=\"titlepage\">\n<h1>{}</h1>\n",
        escape_xml(&book.title)
    );
    if let Some(subtitle) = &book.subtitle {
        title_body.push_str(&format!(
            "<p class=\"subtitle\">{}</p>\n",
            escape_xml(subtitle)
        ));
    }
    if !book.author.trim().is_empty() {
        title_body.push_str(&format!(
            "<p class=\"author\">{}{}</p>\n",
            escape_xml(labels.by),
            escape_xml(&book.author)
        ));
    }
    title_body.push_str("</section>");
    items.push(page("title-page", "title.xhtml", None, true, title_body));

    if let Some(dedication) = &book.dedication {
        let lines: Vec<String> = dedication
            .lines()
            .map(|line| escape_xml(line.trim()))
            .collect();
        let body = format!(
            "<section class=\"dedication\" epub:type=\"dedication\">\n<p>{}</p>\n</section>",
            lines.join("<br/>")
        );
        items.push(page("dedication", "dedication.xhtml", None, true, body));
    }

    let mut toc = format!(
        "<nav epub:type=\"toc\" id=\"toc\">\n<h1>{}</h1>\n<ol>\n",
        escape_xml(labels.contents)
    );
    for (index, chapter) in book.chapters.iter().enumerate() {
        toc.push_str(&format!(
            "<li><a href=\"{}\">{}</a></li>\n",
            chapter_href(index),
            escape_xml(&chapter.title)
        ));
    }
    toc.push_str("</ol>\n</nav>");
    items.push(page("nav", "nav.xhtml", Some("nav"), true, toc));

    for (index, chapter) in book.chapters.iter().enumerate() {
        let (body, mut images) = chapter_body(book, index, chapter)?;
        items.push(page(
            &format!("chapter-{:02}", index + 1),
            &chapter_href(index),
            None,
            true,
            body,
        ));
        items.append(&mut images);
    }
    items.push(Item {
        id: "style".into(),
        href: "style.css".into(),
        media_type: "text/css",
        properties: None,
        in_spine: false,
        bytes: STYLESHEET.as_bytes().to_vec(),
    });

    let package = package_document(book, &items, modified);
    write_container(&package, &items)
}

fn chapter_href(index: usize) -> String {
    format!("chapter-{:02}.xhtml", index + 1)
}

/// The chapter's XHTML body and the images it shows.
fn chapter_body(book: &Book, index: usize, chapter: &BookChapter) -> Result<(String, Vec<Item>)> {
    let number = index + 1;
    let mut images = Vec::new();
    let mut body = format!(
        "<section epub:type=\"chapter\" id=\"chapter-{number}\">\n<p class=\"chapter-label\">{}</p>\n<h1>{}</h1>\n",
        escape_xml(&book.language.chapter_label(number)),
        escape_xml(&chapter.title)
    );
    for paragraph in &chapter.paragraphs {
        body.push_str(&format!("<p>{}</p>\n", escape_xml(paragraph.trim())));
    }
    for (photo_index, photo) in chapter.photos.iter().enumerate() {
        let format = photo
            .format()
            .expect("validate() checked every photo's format");
        let href = format!(
            "images/photo-{number:02}-{}.{}",
            photo_index + 1,
            format.extension()
        );
        body.push_str(&format!(
            "<figure>\n<img src=\"{href}\" alt=\"{}\"/>\n",
            escape_xml(&photo.caption)
        ));
        if !photo.caption.trim().is_empty() {
            body.push_str(&format!(
                "<figcaption>{}</figcaption>\n",
                escape_xml(&photo.caption)
            ));
        }
        body.push_str("</figure>\n");
        images.push(Item {
            id: format!("photo-{number:02}-{}", photo_index + 1),
            href,
            media_type: format.media_type(),
            properties: None,
            in_spine: false,
            bytes: photo.image.clone(),
        });
    }
    if let Some(url) = &chapter.recordings_url {
        let href = format!("images/qr-{number:02}.png");
        let url = escape_xml(url);
        body.push_str(&format!(
            "<aside class=\"recordings\">\n<p>{} <a href=\"{url}\">{url}</a></p>\n<p><img src=\"{href}\" alt=\"QR code: {url}\"/></p>\n</aside>\n",
            escape_xml(book.language.labels().listen)
        ));
        images.push(Item {
            id: format!("qr-{number:02}"),
            href,
            media_type: "image/png",
            properties: None,
            in_spine: false,
            bytes: qr_code_png(
                chapter.recordings_url.as_deref().unwrap_or_default(),
                QR_MODULE_PIXELS,
            )?,
        });
    }
    body.push_str("</section>");
    Ok((body, images))
}

fn xhtml_page(lang: &str, title: &str, body: &str) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<!DOCTYPE html>\n\
         <html xmlns=\"http://www.w3.org/1999/xhtml\" xmlns:epub=\"http://www.idpf.org/2007/ops\" \
         xml:lang=\"{lang}\" lang=\"{lang}\">\n<head>\n<meta charset=\"UTF-8\"/>\n<title>{}</title>\n\
         <link rel=\"stylesheet\" type=\"text/css\" href=\"style.css\"/>\n</head>\n<body>\n{body}\n</body>\n</html>\n",
        escape_xml(title)
    )
}

fn package_document(book: &Book, items: &[Item], modified: DateTime<Utc>) -> String {
    let lang = book.language.tag();
    let mut opf = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
         <package xmlns=\"http://www.idpf.org/2007/opf\" version=\"3.0\" unique-identifier=\"book-id\" xml:lang=\"{lang}\">\n\
         <metadata xmlns:dc=\"http://purl.org/dc/elements/1.1/\">\n\
         <dc:identifier id=\"book-id\">{}</dc:identifier>\n<dc:title>{}</dc:title>\n<dc:language>{lang}</dc:language>\n",
        escape_xml(&book.identifier_or_derived()),
        escape_xml(&book.title)
    );
    if !book.author.trim().is_empty() {
        opf.push_str(&format!(
            "<dc:creator>{}</dc:creator>\n",
            escape_xml(&book.author)
        ));
    }
    opf.push_str(&format!(
        "<meta property=\"dcterms:modified\">{}</meta>\n</metadata>\n<manifest>\n",
        modified.format("%Y-%m-%dT%H:%M:%SZ")
    ));
    for item in items {
        let properties = item
            .properties
            .map(|p| format!(" properties=\"{p}\""))
            .unwrap_or_default();
        opf.push_str(&format!(
            "<item id=\"{}\" href=\"{}\" media-type=\"{}\"{properties}/>\n",
            item.id, item.href, item.media_type
        ));
    }
    opf.push_str("</manifest>\n<spine>\n");
    for item in items.iter().filter(|item| item.in_spine) {
        opf.push_str(&format!("<itemref idref=\"{}\"/>\n", item.id));
    }
    opf.push_str("</spine>\n</package>\n");
    opf
}

/// The OCF zip: `mimetype` first and stored, then the container and package files.
fn write_container(package: &str, items: &[Item]) -> Result<Vec<u8>> {
    const CONTAINER_XML: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
        <container version=\"1.0\" xmlns=\"urn:oasis:names:tc:opendocument:xmlns:container\">\n\
        <rootfiles>\n<rootfile full-path=\"EPUB/package.opf\" media-type=\"application/oebps-package+xml\"/>\n\
        </rootfiles>\n</container>\n";
    let zip_error =
        |err: zip::result::ZipError| MemoirError::Export(format!("writing the EPUB zip: {err}"));
    let io_error =
        |err: std::io::Error| MemoirError::Export(format!("writing the EPUB zip: {err}"));
    let stored = SimpleFileOptions::default().compression_method(CompressionMethod::Stored);
    let deflated = SimpleFileOptions::default().compression_method(CompressionMethod::Deflated);
    let mut zip = ZipWriter::new(Cursor::new(Vec::new()));
    zip.start_file("mimetype", stored).map_err(zip_error)?;
    zip.write_all(b"application/epub+zip").map_err(io_error)?;
    zip.start_file("META-INF/container.xml", deflated)
        .map_err(zip_error)?;
    zip.write_all(CONTAINER_XML.as_bytes()).map_err(io_error)?;
    zip.start_file("EPUB/package.opf", deflated)
        .map_err(zip_error)?;
    zip.write_all(package.as_bytes()).map_err(io_error)?;
    for item in items {
        // Images are compressed already.
        let options = if item.media_type.starts_with("image/") {
            stored
        } else {
            deflated
        };
        zip.start_file(format!("EPUB/{}", item.href), options)
            .map_err(zip_error)?;
        zip.write_all(&item.bytes).map_err(io_error)?;
    }
    Ok(zip.finish().map_err(zip_error)?.into_inner())
}
