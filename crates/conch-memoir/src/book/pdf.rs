//! Print-ready PDF: a 6 × 9 inch book with title page, dedication, table of contents with page
//! numbers, chapters with photos, and per chapter a link and QR code to the teller's recordings.
//!
//! One font sets the whole book, and it must cover Chinese as well as Latin text. Fonts are not
//! shipped with Conch (a CJK font is 5–20 MB); [`BookFont::from_system`] loads one installed on the
//! machine: Debian's `fonts-noto-cjk` or `fonts-wqy-microhei`, or the file named by
//! [`FONT_ENV_VAR`]. krilla embeds only the glyphs used (subset) with a ToUnicode map, so the
//! PDF stays small and its text can be searched and extracted.

use std::path::Path;
use std::sync::Arc;

use krilla::action::{Action, LinkAction};
use krilla::annotation::{Annotation, LinkAnnotation, Target};
use krilla::color::luma;
use krilla::destination::XyzDestination;
use krilla::geom::{Point, Rect, Size, Transform};
use krilla::image::Image;
use krilla::metadata::Metadata;
use krilla::outline::{Outline, OutlineNode};
use krilla::page::PageSettings;
use krilla::paint::Fill;
use krilla::text::{Font, TextDirection};
use krilla::Document;
use skrifa::instance::{LocationRef, Size as FontSize};
use skrifa::raw::FileRef;
use skrifa::string::StringId;
use skrifa::{FontRef, MetadataProvider};

use super::qr::qr_code_png;
use super::{Book, ImageFormat};
use crate::text::is_wide;
use crate::{MemoirError, Result};

/// Environment variable naming the font file to set the PDF in (a `.ttf`, `.otf` or `.ttc`).
pub const FONT_ENV_VAR: &str = "CONCH_BOOK_FONT";

/// Fonts looked for when [`FONT_ENV_VAR`] is not set, best first (Debian paths).
const SYSTEM_FONTS: &[&str] = &[
    "/usr/share/fonts/opentype/noto/NotoSerifCJK-Regular.ttc",
    "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/truetype/wqy/wqy-microhei.ttc",
    "/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc",
    "/usr/share/fonts/truetype/arphic/uming.ttc",
    "/usr/share/fonts/truetype/droid/DroidSansFallbackFull.ttf",
];

/// Characters a book font must have: Latin and common Chinese.
const REQUIRED_CHARACTERS: &str = "Aaz09的中国人我家年";

/// The font a PDF is set in.
#[derive(Clone)]
pub struct BookFont {
    data: Arc<Vec<u8>>,
    index: u32,
    font: Font,
    description: String,
}

impl std::fmt::Debug for BookFont {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BookFont")
            .field("description", &self.description)
            .finish()
    }
}

impl BookFont {
    /// The font named by [`FONT_ENV_VAR`], else the first of the usual Debian CJK fonts found.
    pub fn from_system() -> Result<Self> {
        if let Some(path) = std::env::var_os(FONT_ENV_VAR).filter(|path| !path.is_empty()) {
            return Self::from_file(Path::new(&path));
        }
        match SYSTEM_FONTS.iter().map(Path::new).find(|path| path.is_file()) {
            Some(path) => Self::from_file(path),
            None => Err(MemoirError::Font(format!(
                "no font covering Chinese found (looked for {}); install the Debian package \
                 fonts-noto-cjk or fonts-wqy-microhei, or set {FONT_ENV_VAR} to a .ttf/.otf/.ttc file",
                SYSTEM_FONTS.join(", ")
            ))),
        }
    }

    /// A font file; in a collection the Simplified Chinese face ("… SC") is chosen, else the first.
    pub fn from_file(path: &Path) -> Result<Self> {
        let data = std::fs::read(path).map_err(|err| {
            MemoirError::Font(format!("cannot read font file {}: {err}", path.display()))
        })?;
        Self::from_bytes(data, &path.display().to_string())
    }

    /// Font bytes; `name` is used in messages.
    pub fn from_bytes(data: Vec<u8>, name: &str) -> Result<Self> {
        let not_a_font = |err| MemoirError::Font(format!("{name} is not a font file: {err}"));
        let faces: Vec<FontRef> = FileRef::new(&data)
            .map_err(not_a_font)?
            .fonts()
            .filter_map(|face| face.ok())
            .collect();
        if faces.is_empty() {
            return Err(MemoirError::Font(format!(
                "{name} holds no readable font face"
            )));
        }
        let family = |face: &FontRef| {
            face.localized_strings(StringId::FAMILY_NAME)
                .english_or_first()
                .map(|family| family.to_string())
                .unwrap_or_default()
        };
        let index = faces
            .iter()
            .position(|face| family(face).contains(" SC"))
            .unwrap_or(0);
        let face = &faces[index];
        let charmap = face.charmap();
        let missing: String = REQUIRED_CHARACTERS
            .chars()
            .filter(|&c| charmap.map(c).is_none())
            .collect();
        if !missing.is_empty() {
            return Err(MemoirError::Font(format!(
                "{name} ({}) lacks characters a memoir needs: {missing:?}; use a CJK font such as \
                 Noto Serif CJK or WenQuanYi Micro Hei",
                family(face)
            )));
        }
        let description = format!("{} from {name}", family(face));
        let index = u32::try_from(index).expect("a font collection holds fewer than 2^32 faces");
        let data = Arc::new(data);
        let font = Font::new(data.clone().into(), index)
            .ok_or_else(|| MemoirError::Font(format!("the PDF writer cannot use {description}")))?;
        Ok(Self {
            data,
            index,
            font,
            description,
        })
    }

    /// The font family and where it was loaded from.
    pub fn description(&self) -> &str {
        &self.description
    }

    fn measurer(&self) -> Measurer<'_> {
        let face =
            FontRef::from_index(&self.data, self.index).expect("checked when the font was loaded");
        let units_per_em = f32::from(
            face.metrics(FontSize::unscaled(), LocationRef::default())
                .units_per_em,
        );
        Measurer {
            charmap: face.charmap(),
            glyphs: face.glyph_metrics(FontSize::unscaled(), LocationRef::default()),
            units_per_em: units_per_em.max(1.0),
        }
    }
}

/// Text widths from the font's advance widths (kerning ignored: lines come out a hair short).
struct Measurer<'a> {
    charmap: skrifa::charmap::Charmap<'a>,
    glyphs: skrifa::metrics::GlyphMetrics<'a>,
    units_per_em: f32,
}

impl Measurer<'_> {
    fn width(&self, text: &str, size: f32) -> f32 {
        let units: f32 = text
            .chars()
            .map(|c| {
                let glyph = self.charmap.map(c).unwrap_or_default();
                self.glyphs.advance_width(glyph).unwrap_or(0.0)
            })
            .sum();
        units * size / self.units_per_em
    }
}

// Page geometry in points: 6 × 9 inches, a common memoir trim size.
const PAGE_WIDTH: f32 = 432.0;
const PAGE_HEIGHT: f32 = 648.0;
const MARGIN_X: f32 = 54.0;
const MARGIN_TOP: f32 = 60.0;
const MARGIN_BOTTOM: f32 = 66.0;
const TEXT_WIDTH: f32 = PAGE_WIDTH - 2.0 * MARGIN_X;
const TEXT_BOTTOM: f32 = PAGE_HEIGHT - MARGIN_BOTTOM;
const FOOTER_BASELINE: f32 = PAGE_HEIGHT - 36.0;

const BODY_SIZE: f32 = 11.0;
const BODY_LEADING: f32 = 17.0;
const PARAGRAPH_GAP: f32 = 7.0;
/// The printed QR code is at least this wide, and wider for long URLs so that no module is
/// under `QR_MIN_MODULE` points (0.7 mm, still read by phone cameras at arm's length).
const QR_MIN_SIDE: f32 = 96.0;
const QR_MIN_MODULE: f32 = 2.0;
/// Pixels per QR module in the embedded PNG; the image is drawn unsmoothed, so this only needs
/// to keep modules whole pixels.
const QR_MODULE_PIXELS: usize = 10;
const GRAY: u8 = 90;

#[derive(Clone, Copy, PartialEq)]
enum Align {
    Left,
    Center,
}

/// One thing drawn on a page, in points from the top-left corner.
enum Op {
    Text {
        x: f32,
        baseline: f32,
        size: f32,
        text: String,
        gray: bool,
    },
    Image {
        x: f32,
        top: f32,
        width: f32,
        height: f32,
        image: Image,
    },
    Link {
        rect: Rect,
        url: String,
    },
}

#[derive(Default)]
struct LaidOutPage {
    ops: Vec<Op>,
    numbered: bool,
}

/// Pages being filled top to bottom.
struct Layout<'a> {
    measure: &'a Measurer<'a>,
    pages: Vec<LaidOutPage>,
    y: f32,
}

impl<'a> Layout<'a> {
    fn new(measure: &'a Measurer<'a>) -> Self {
        Self {
            measure,
            pages: Vec::new(),
            y: MARGIN_TOP,
        }
    }

    fn new_page(&mut self, numbered: bool) {
        self.pages.push(LaidOutPage {
            ops: Vec::new(),
            numbered,
        });
        self.y = MARGIN_TOP;
    }

    fn page(&mut self) -> &mut LaidOutPage {
        if self.pages.is_empty() {
            self.new_page(true);
        }
        self.pages.last_mut().expect("a page was just ensured")
    }

    /// Starts a new page unless `height` more points fit on this one.
    fn ensure_room(&mut self, height: f32) {
        if self.pages.is_empty() || (self.y + height > TEXT_BOTTOM && self.y > MARGIN_TOP) {
            self.new_page(true);
        }
    }

    /// Wrapped text from the cursor down, breaking pages between lines.
    fn text(&mut self, text: &str, size: f32, leading: f32, align: Align, gray: bool) {
        for line in wrap(self.measure, text, size, TEXT_WIDTH) {
            self.ensure_room(leading);
            let width = self.measure.width(&line, size);
            let x = match align {
                Align::Left => MARGIN_X,
                Align::Center => MARGIN_X + (TEXT_WIDTH - width) / 2.0,
            };
            let baseline = self.y + size;
            self.page().ops.push(Op::Text {
                x,
                baseline,
                size,
                text: line,
                gray,
            });
            self.y += leading;
        }
    }

    fn gap(&mut self, height: f32) {
        self.y += height;
    }

    /// A photo scaled to the text width (at most 60% of the text height), centred, captioned.
    fn photo(&mut self, image: Image, caption: &str) {
        let (pixels_wide, pixels_high) = image.size();
        let aspect = pixels_high.max(1) as f32 / pixels_wide.max(1) as f32;
        let max_height = (TEXT_BOTTOM - MARGIN_TOP) * 0.6;
        let (width, height) = if TEXT_WIDTH * aspect > max_height {
            (max_height / aspect, max_height)
        } else {
            (TEXT_WIDTH, TEXT_WIDTH * aspect)
        };
        self.gap(6.0);
        self.ensure_room(height + 30.0);
        let (x, top) = (MARGIN_X + (TEXT_WIDTH - width) / 2.0, self.y);
        self.page().ops.push(Op::Image {
            x,
            top,
            width,
            height,
            image,
        });
        self.y += height + 6.0;
        if !caption.trim().is_empty() {
            self.text(caption, 9.0, 13.0, Align::Center, true);
        }
        self.gap(PARAGRAPH_GAP);
    }

    /// The invitation to listen, the URL and the QR code, kept together on one page; the URL and
    /// the code are both links.
    fn recordings(&mut self, url: &str, listen_label: &str) -> Result<()> {
        let qr = load_image(
            &qr_code_png(url, QR_MODULE_PIXELS)?,
            ImageFormat::Png,
            false,
            "the QR code",
        )?;
        let modules = (qr.size().0 as usize / QR_MODULE_PIXELS) as f32;
        let qr_side = (modules * QR_MIN_MODULE).clamp(QR_MIN_SIDE, TEXT_WIDTH);
        let listen_lines = wrap(self.measure, listen_label, 9.5, TEXT_WIDTH).len() as f32;
        let url_lines = wrap(self.measure, url, 8.0, TEXT_WIDTH).len() as f32;
        self.gap(12.0);
        self.ensure_room(listen_lines * 14.0 + url_lines * 12.0 + qr_side + 12.0);
        self.text(listen_label, 9.5, 14.0, Align::Center, true);
        let url_top = self.y;
        self.text(url, 8.0, 12.0, Align::Center, true);
        let link_rect = Rect::from_xywh(MARGIN_X, url_top, TEXT_WIDTH, self.y - url_top);
        let (x, top) = (MARGIN_X + (TEXT_WIDTH - qr_side) / 2.0, self.y + 6.0);
        let page = self.page();
        page.ops.push(Op::Image {
            x,
            top,
            width: qr_side,
            height: qr_side,
            image: qr,
        });
        for rect in [link_rect, Rect::from_xywh(x, top, qr_side, qr_side)]
            .into_iter()
            .flatten()
        {
            page.ops.push(Op::Link {
                rect,
                url: url.to_string(),
            });
        }
        self.y = top + qr_side + 6.0;
        Ok(())
    }
}

/// Breaks `text` into lines no wider than `width`: between words, and between CJK characters
/// (never before closing or after opening punctuation); a word longer than the line is split.
fn wrap(measure: &Measurer, text: &str, size: f32, width: f32) -> Vec<String> {
    let mut lines = Vec::new();
    let mut line = String::new();
    let mut space_pending = false;
    let space = measure.width(" ", size);
    for atom in break_atoms(text) {
        if atom == " " {
            space_pending = !line.is_empty();
            continue;
        }
        let gap = if space_pending { space } else { 0.0 };
        let atom_width = measure.width(&atom, size);
        let line_width = measure.width(&line, size);
        if !line.is_empty() && line_width + gap + atom_width > width {
            lines.push(std::mem::take(&mut line));
        } else if space_pending {
            line.push(' ');
        }
        space_pending = false;
        if measure.width(&line, size) + atom_width <= width {
            line.push_str(&atom);
            continue;
        }
        for c in atom.chars() {
            let mut candidate = line.clone();
            candidate.push(c);
            if !line.is_empty() && measure.width(&candidate, size) > width {
                lines.push(std::mem::take(&mut line));
            }
            line.push(c);
        }
    }
    if !line.is_empty() {
        lines.push(line);
    }
    lines
}

/// Units a line may not break inside: Latin words with their punctuation, single CJK characters
/// with attached punctuation, and single spaces.
fn break_atoms(text: &str) -> Vec<String> {
    const CLOSING: &str = ",.;:!?)]}%，。、；：！？）」』》〉”’…";
    const OPENING: &str = "([{（「『《〈“‘";
    let mut atoms: Vec<String> = Vec::new();
    let mut glue_next = false;
    for c in text.chars() {
        if c.is_whitespace() {
            if atoms.last().is_some_and(|last| last != " ") {
                atoms.push(" ".into());
            }
            glue_next = false;
            continue;
        }
        let attach = match atoms.last() {
            Some(last) if last != " " => {
                let last_wide = last.chars().last().is_some_and(is_wide);
                glue_next || CLOSING.contains(c) || (!is_wide(c) && !last_wide)
            }
            _ => false,
        };
        match atoms.last_mut() {
            Some(last) if attach => last.push(c),
            _ => atoms.push(c.to_string()),
        }
        glue_next = OPENING.contains(c);
    }
    atoms
}

/// `smooth`: let viewers interpolate when scaling (photos); off keeps QR modules crisp.
fn load_image(bytes: &[u8], format: ImageFormat, smooth: bool, what: &str) -> Result<Image> {
    let data: krilla::Data = bytes.to_vec().into();
    match format {
        ImageFormat::Png => Image::from_png(data, smooth),
        ImageFormat::Jpeg => Image::from_jpeg(data, smooth),
    }
    .map_err(|err| MemoirError::Book(format!("{what} cannot be read: {err}")))
}

/// The book as a PDF set in `font`.
pub fn render_pdf(book: &Book, font: &BookFont) -> Result<Vec<u8>> {
    book.validate()?;
    let measure = font.measurer();
    let labels = book.language.labels();

    // Front matter: title page (unnumbered) and dedication.
    let mut front = Layout::new(&measure);
    front.new_page(false);
    front.y = PAGE_HEIGHT * 0.28;
    front.text(&book.title, 26.0, 34.0, Align::Center, false);
    if let Some(subtitle) = &book.subtitle {
        front.gap(10.0);
        front.text(subtitle, 14.0, 20.0, Align::Center, true);
    }
    if !book.author.trim().is_empty() {
        front.gap(40.0);
        front.text(
            &format!("{}{}", labels.by, book.author.trim()),
            13.0,
            18.0,
            Align::Center,
            false,
        );
    }
    if let Some(dedication) = &book.dedication {
        front.new_page(true);
        front.y = PAGE_HEIGHT * 0.3;
        for line in dedication.lines() {
            front.text(line, 12.0, 19.0, Align::Center, false);
        }
    }

    // Chapters, each from a new page; their page numbers go into the contents.
    let mut body = Layout::new(&measure);
    let mut chapter_starts = Vec::with_capacity(book.chapters.len());
    for (index, chapter) in book.chapters.iter().enumerate() {
        let number = index + 1;
        body.new_page(true);
        chapter_starts.push(body.pages.len() - 1);
        body.gap(30.0);
        body.text(
            &book.language.chapter_label(number),
            10.0,
            16.0,
            Align::Left,
            true,
        );
        body.text(&chapter.title, 20.0, 27.0, Align::Left, false);
        body.gap(18.0);
        for paragraph in &chapter.paragraphs {
            body.text(paragraph, BODY_SIZE, BODY_LEADING, Align::Left, false);
            body.gap(PARAGRAPH_GAP);
        }
        for (photo_index, photo) in chapter.photos.iter().enumerate() {
            let format = photo
                .format()
                .expect("validate() checked every photo's format");
            let what = format!("photo {} of chapter {number}", photo_index + 1);
            body.photo(
                load_image(&photo.image, format, true, &what)?,
                &photo.caption,
            );
        }
        if let Some(url) = &chapter.recordings_url {
            body.recordings(url, labels.listen)?;
        }
    }

    // Contents: laid out once to count its pages, then again with the real page numbers.
    let contents = |numbers: &[usize]| {
        let mut toc = Layout::new(&measure);
        toc.new_page(true);
        toc.gap(30.0);
        toc.text(labels.contents, 20.0, 27.0, Align::Left, false);
        toc.gap(14.0);
        for (chapter, page_number) in book.chapters.iter().zip(numbers) {
            let number_text = page_number.to_string();
            let lines = wrap(&measure, &chapter.title, BODY_SIZE, TEXT_WIDTH - 40.0);
            for (line_index, line) in lines.iter().enumerate() {
                toc.ensure_room(20.0);
                let baseline = toc.y + BODY_SIZE;
                let page = toc.page();
                page.ops.push(Op::Text {
                    x: MARGIN_X,
                    baseline,
                    size: BODY_SIZE,
                    text: line.clone(),
                    gray: false,
                });
                if line_index + 1 == lines.len() {
                    let x = MARGIN_X + TEXT_WIDTH - measure.width(&number_text, BODY_SIZE);
                    page.ops.push(Op::Text {
                        x,
                        baseline,
                        size: BODY_SIZE,
                        text: number_text.clone(),
                        gray: false,
                    });
                }
                toc.y += 20.0;
            }
        }
        toc.pages
    };
    let toc_page_count = contents(&vec![0; book.chapters.len()]).len();
    let first_body_page = front.pages.len() + toc_page_count;
    let start_numbers: Vec<usize> = chapter_starts
        .iter()
        .map(|start| first_body_page + start + 1)
        .collect();
    let toc_pages = contents(&start_numbers);

    let pages: Vec<LaidOutPage> = front
        .pages
        .into_iter()
        .chain(toc_pages)
        .chain(body.pages)
        .collect();
    write_pdf(book, font, pages, &start_numbers)
}

fn write_pdf(
    book: &Book,
    font: &BookFont,
    pages: Vec<LaidOutPage>,
    chapter_pages: &[usize],
) -> Result<Vec<u8>> {
    let mut document = Document::new();
    let measure = font.measurer();
    let page_size = Size::from_wh(PAGE_WIDTH, PAGE_HEIGHT).expect("the page size is positive");
    for (index, laid_out) in pages.into_iter().enumerate() {
        // The trim box tells print shops the page is cut to exactly this size (no bleed).
        let settings = PageSettings::new(page_size).with_trim_box(Rect::from_xywh(
            0.0,
            0.0,
            PAGE_WIDTH,
            PAGE_HEIGHT,
        ));
        let mut page = document.start_page_with(settings);
        let mut links = Vec::new();
        let mut surface = page.surface();
        for op in laid_out.ops {
            match op {
                Op::Text {
                    x,
                    baseline,
                    size,
                    text,
                    gray,
                } => {
                    surface.set_fill(Some(fill(if gray { GRAY } else { 0 })));
                    surface.draw_text(
                        Point::from_xy(x, baseline),
                        font.font.clone(),
                        size,
                        &text,
                        false,
                        TextDirection::Auto,
                    );
                }
                Op::Image {
                    x,
                    top,
                    width,
                    height,
                    image,
                } => {
                    let size = Size::from_wh(width, height).ok_or_else(|| {
                        MemoirError::Book("an image would be drawn with no size".into())
                    })?;
                    surface.push_transform(&Transform::from_translate(x, top));
                    surface.draw_image(image, size);
                    surface.pop();
                }
                Op::Link { rect, url } => links.push((rect, url)),
            }
        }
        if laid_out.numbered {
            let number = (index + 1).to_string();
            let x = (PAGE_WIDTH - measure.width(&number, 9.0)) / 2.0;
            surface.set_fill(Some(fill(GRAY)));
            surface.draw_text(
                Point::from_xy(x, FOOTER_BASELINE),
                font.font.clone(),
                9.0,
                &number,
                false,
                TextDirection::Auto,
            );
        }
        surface.finish();
        for (rect, url) in links {
            let target = Target::Action(Action::Link(LinkAction::new(url.clone())));
            page.add_annotation(Annotation::new_link(
                LinkAnnotation::new(rect, target),
                Some(url),
            ));
        }
        page.finish();
    }
    let mut outline = Outline::new();
    for (chapter, page_number) in book.chapters.iter().zip(chapter_pages) {
        let destination = XyzDestination::new(page_number - 1, Point::from_xy(0.0, 0.0));
        outline.push_child(OutlineNode::new(chapter.title.clone(), destination));
    }
    document.set_outline(outline);
    let mut metadata = Metadata::new()
        .title(book.title.clone())
        .language(book.language.tag().to_string());
    if !book.author.trim().is_empty() {
        metadata = metadata.authors(vec![book.author.clone()]);
    }
    document.set_metadata(metadata);
    document
        .finish()
        .map_err(|err| MemoirError::Export(format!("writing the PDF: {err:?}")))
}

fn fill(lightness: u8) -> Fill {
    Fill {
        paint: luma::Color::new(lightness).into(),
        ..Fill::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atoms_keep_words_and_punctuation_together() {
        assert_eq!(
            break_atoms("Hello,  world (again)."),
            ["Hello,", " ", "world", " ", "(again)."]
        );
        // Chinese breaks between characters, never before closing or after opening punctuation.
        assert_eq!(
            break_atoms("我说：“好。”他走了"),
            ["我", "说：", "“好。”", "他", "走", "了"]
        );
        assert_eq!(
            break_atoms("Harold’s “bakery”"),
            ["Harold’s", " ", "“bakery”"]
        );
    }

    #[test]
    fn missing_fonts_and_non_fonts_are_clear_errors() {
        let err = BookFont::from_file(Path::new("/nonexistent/font.ttf"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("/nonexistent/font.ttf"), "{err}");
        let err = BookFont::from_bytes(b"not a font at all".to_vec(), "junk.ttf")
            .unwrap_err()
            .to_string();
        assert!(err.contains("junk.ttf"), "{err}");
    }
}
