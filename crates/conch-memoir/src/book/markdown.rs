//! Markdown export: one document plus the photo files it links to.

use super::Book;
use crate::Result;

/// The book as Markdown, with the photos it refers to by relative path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MarkdownBook {
    pub markdown: String,
    /// `(relative path, bytes)` of each photo, e.g. `photos/chapter-01-1.jpg`.
    pub files: Vec<(String, Vec<u8>)>,
}

/// Title, dedication, a linked table of contents, then each chapter with its paragraphs, photos
/// and the link to its recordings.
pub fn render_markdown(book: &Book) -> Result<MarkdownBook> {
    book.validate()?;
    let labels = book.language.labels();
    let mut out = format!("# {}\n\n", one_line(&book.title));
    if let Some(subtitle) = &book.subtitle {
        out.push_str(&format!("*{}*\n\n", one_line(subtitle)));
    }
    if !book.author.trim().is_empty() {
        out.push_str(&format!("{}{}\n\n", labels.by, one_line(&book.author)));
    }
    if let Some(dedication) = &book.dedication {
        for line in dedication.lines() {
            out.push_str(&format!("> {}\n", line.trim()));
        }
        out.push('\n');
    }
    out.push_str(&format!("## {}\n\n", labels.contents));
    for (index, chapter) in book.chapters.iter().enumerate() {
        out.push_str(&format!(
            "{}. [{}](#chapter-{})\n",
            index + 1,
            one_line(&chapter.title),
            index + 1
        ));
    }
    let mut files = Vec::new();
    for (index, chapter) in book.chapters.iter().enumerate() {
        let number = index + 1;
        out.push_str(&format!(
            "\n<a id=\"chapter-{number}\"></a>\n\n## {}: {}\n\n",
            book.language.chapter_label(number),
            one_line(&chapter.title)
        ));
        for paragraph in &chapter.paragraphs {
            out.push_str(&format!("{}\n\n", one_line(paragraph)));
        }
        for (photo_index, photo) in chapter.photos.iter().enumerate() {
            let format = photo
                .format()
                .expect("validate() checked every photo's format");
            let path = format!(
                "photos/chapter-{number:02}-{}.{}",
                photo_index + 1,
                format.extension()
            );
            out.push_str(&format!(
                "![{}]({path})\n\n",
                one_line(&photo.caption).replace(['[', ']'], "")
            ));
            if !photo.caption.trim().is_empty() {
                out.push_str(&format!("*{}*\n\n", one_line(&photo.caption)));
            }
            files.push((path, photo.image.clone()));
        }
        if let Some(url) = &chapter.recordings_url {
            out.push_str(&format!("{} <{url}>\n\n", labels.listen));
        }
    }
    Ok(MarkdownBook {
        markdown: out.trim_end().to_string() + "\n",
        files,
    })
}

/// Text on one line: a paragraph with hard line breaks would otherwise split in Markdown.
fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::book::tests::sample_book;
    use crate::book::Photo;

    #[test]
    fn markdown_has_title_contents_chapters_links_and_photos() {
        let mut book = sample_book();
        book.chapters[1].photos.push(Photo {
            image: b"\xFF\xD8\xFFjpeg".to_vec(),
            caption: "The river [1950]".into(),
        });
        let export = render_markdown(&book).unwrap();
        let md = &export.markdown;
        assert!(md.starts_with("# Bread & Rivers\n"));
        assert!(md.contains("> For Anna, Tom and little Mei.\n"));
        assert!(md.contains("## Contents\n\n1. [Childhood](#chapter-1)\n2. [苏州](#chapter-2)\n"));
        assert!(md.contains(
            "## Chapter 1: Childhood\n\nWe lived in Leeds above my uncle Harold's bakery.\n"
        ));
        assert!(md.contains("家门口有一条小河。"));
        assert!(md.contains("<https://family.example/r/walter/childhood>"));
        assert!(md.contains("![The river 1950](photos/chapter-02-1.jpg)"));
        assert_eq!(
            export.files,
            [(
                "photos/chapter-02-1.jpg".to_string(),
                b"\xFF\xD8\xFFjpeg".to_vec()
            )]
        );
        let position = |needle: &str| md.find(needle).unwrap();
        assert!(position("## Chapter 1") < position("## Chapter 2"));
    }
}
