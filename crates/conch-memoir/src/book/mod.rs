//! The finished book and its exports: Markdown, EPUB 3 and a print-ready PDF.

mod epub;
mod markdown;
mod pdf;
mod qr;

pub use epub::render_epub;
pub use markdown::{render_markdown, MarkdownBook};
pub use pdf::{render_pdf, BookFont, FONT_ENV_VAR};
pub use qr::qr_code_png;

use crate::plan::Language;
use crate::{MemoirError, Result};

/// A memoir ready to export.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Book {
    pub title: String,
    pub subtitle: Option<String>,
    /// The teller, printed as the author.
    pub author: String,
    pub dedication: Option<String>,
    pub language: Language,
    /// A unique id for the EPUB (for example `urn:uuid:…`); derived from title and author if
    /// absent.
    pub identifier: Option<String>,
    pub chapters: Vec<BookChapter>,
}

/// A chapter of the book.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BookChapter {
    pub title: String,
    pub paragraphs: Vec<String>,
    /// Shown after the text, each on its own, scaled to the text width.
    pub photos: Vec<Photo>,
    /// Where the teller's original recordings of this chapter can be heard (`http(s)://`);
    /// printed as a link and a QR code.
    pub recordings_url: Option<String>,
}

/// A photo in PNG or JPEG.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Photo {
    pub image: Vec<u8>,
    pub caption: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ImageFormat {
    Png,
    Jpeg,
}

impl ImageFormat {
    pub(crate) fn extension(self) -> &'static str {
        match self {
            ImageFormat::Png => "png",
            ImageFormat::Jpeg => "jpg",
        }
    }

    pub(crate) fn media_type(self) -> &'static str {
        match self {
            ImageFormat::Png => "image/png",
            ImageFormat::Jpeg => "image/jpeg",
        }
    }
}

impl Photo {
    pub(crate) fn format(&self) -> Option<ImageFormat> {
        if self.image.starts_with(b"\x89PNG\r\n\x1a\n") {
            Some(ImageFormat::Png)
        } else if self.image.starts_with(&[0xFF, 0xD8, 0xFF]) {
            Some(ImageFormat::Jpeg)
        } else {
            None
        }
    }
}

/// The words the book itself prints, in the book's language.
pub(crate) struct Labels {
    pub contents: &'static str,
    /// Put before the author's name, spacing included.
    pub by: &'static str,
    pub listen: &'static str,
}

impl Language {
    pub(crate) fn labels(self) -> Labels {
        match self {
            Language::English => Labels {
                contents: "Contents",
                by: "by ",
                listen: "Hear this chapter in the teller's own voice: scan the code or open",
            },
            Language::SimplifiedChinese => Labels {
                contents: "目录",
                by: "讲述：",
                listen: "扫描二维码或打开下面的链接，收听本章讲述者的原声：",
            },
        }
    }

    /// "Chapter 3" / "第3章".
    pub(crate) fn chapter_label(self, number: usize) -> String {
        match self {
            Language::English => format!("Chapter {number}"),
            Language::SimplifiedChinese => format!("第{number}章"),
        }
    }
}

impl Book {
    /// Checks everything an export needs, naming the first problem found.
    pub fn validate(&self) -> Result<()> {
        if self.title.trim().is_empty() {
            return Err(MemoirError::Book("the book has no title".into()));
        }
        if self.chapters.is_empty() {
            return Err(MemoirError::Book("the book has no chapters".into()));
        }
        for (index, chapter) in self.chapters.iter().enumerate() {
            let number = index + 1;
            if chapter.title.trim().is_empty() {
                return Err(MemoirError::Book(format!("chapter {number} has no title")));
            }
            for (photo_index, photo) in chapter.photos.iter().enumerate() {
                if photo.format().is_none() {
                    return Err(MemoirError::Book(format!(
                        "photo {} of chapter {number} is neither PNG nor JPEG",
                        photo_index + 1
                    )));
                }
            }
            if let Some(url) = &chapter.recordings_url {
                let has_scheme = url.starts_with("https://") || url.starts_with("http://");
                if !has_scheme
                    || url.chars().any(|c| c.is_whitespace() || c.is_control())
                    || url.len() > 2000
                {
                    return Err(MemoirError::Book(format!(
                        "the recordings URL of chapter {number} must be an http(s) URL without spaces, \
                         at most 2000 bytes: {url:?}"
                    )));
                }
            }
        }
        Ok(())
    }

    /// The identifier given, or one derived from the title and author (FNV-1a, stable).
    pub(crate) fn identifier_or_derived(&self) -> String {
        if let Some(identifier) = self.identifier.as_ref().filter(|id| !id.trim().is_empty()) {
            return identifier.clone();
        }
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for byte in self.title.bytes().chain([0]).chain(self.author.bytes()) {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
        format!("urn:conch-memoir:{hash:016x}")
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A small two-language book for the export tests.
    pub(crate) fn sample_book() -> Book {
        Book {
            title: "Bread & Rivers".into(),
            subtitle: Some("A life in two cities".into()),
            author: "Walter Green".into(),
            dedication: Some("For Anna, Tom and little Mei.".into()),
            language: Language::English,
            identifier: None,
            chapters: vec![
                BookChapter {
                    title: "Childhood".into(),
                    paragraphs: vec!["We lived in Leeds above my uncle Harold's bakery.".into()],
                    photos: vec![],
                    recordings_url: Some("https://family.example/r/walter/childhood".into()),
                },
                BookChapter {
                    title: "苏州".into(),
                    paragraphs: vec!["我是一九四八年在苏州出生的，家门口有一条小河。".into()],
                    photos: vec![],
                    recordings_url: None,
                },
            ],
        }
    }

    #[test]
    fn validation_names_the_problem() {
        sample_book().validate().unwrap();
        let mut book = sample_book();
        book.chapters[1].recordings_url = Some("ftp://x".into());
        assert!(book
            .validate()
            .unwrap_err()
            .to_string()
            .contains("chapter 2"));
        let mut book = sample_book();
        book.chapters[0].photos.push(Photo {
            image: b"GIF89a".to_vec(),
            caption: "x".into(),
        });
        assert!(book
            .validate()
            .unwrap_err()
            .to_string()
            .contains("photo 1 of chapter 1"));
        let mut book = sample_book();
        book.title = " ".into();
        assert!(book
            .validate()
            .unwrap_err()
            .to_string()
            .contains("no title"));
    }

    #[test]
    fn derived_identifiers_are_stable_and_distinct() {
        let book = sample_book();
        assert_eq!(
            book.identifier_or_derived(),
            sample_book().identifier_or_derived()
        );
        let mut other = sample_book();
        other.author = "Someone Else".into();
        assert_ne!(book.identifier_or_derived(), other.identifier_or_derived());
    }
}
