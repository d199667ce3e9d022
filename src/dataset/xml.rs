//! A minimal reader for the flat, attribute-free XML of Pascal VOC annotations: find child
//! elements by tag name inside a byte range and read their text. It is not a general XML
//! parser (no attributes, CDATA or entities beyond the five predefined ones), which VOC files
//! do not need. Offsets are byte offsets into the file text, turned into 1-based lines for
//! error messages.

/// A `<tag>...</tag>` element: byte range of its inner text and of the whole element.
#[derive(Debug, Clone, Copy)]
pub struct Elem {
    pub start: usize,
    pub inner: (usize, usize),
}

/// All direct-or-nested `<tag>` elements in `text[from..to]`, in order. An opening tag
/// without its closing tag is returned as `Err(offset_of_opening_tag)`.
pub fn find_all(text: &str, tag: &str, from: usize, to: usize) -> Result<Vec<Elem>, usize> {
    let open = format!("<{tag}>");
    let open_attr = format!("<{tag} ");
    let close = format!("</{tag}>");
    let mut out = Vec::new();
    let mut pos = from;
    let hay = &text[..to];
    loop {
        let a = hay[pos..].find(&open).map(|i| (i + pos, open.len()));
        let b = hay[pos..].find(&open_attr).map(|i| {
            let s = i + pos;
            let gt = hay[s..].find('>').map(|g| g + 1).unwrap_or(open_attr.len());
            (s, gt)
        });
        let (s, len) = match (a, b) {
            (Some(a), Some(b)) => {
                if a.0 <= b.0 {
                    a
                } else {
                    b
                }
            }
            (Some(a), None) => a,
            (None, Some(b)) => b,
            (None, None) => break,
        };
        let inner_start = s + len;
        let Some(e) = hay[inner_start..].find(&close) else {
            return Err(s);
        };
        let inner_end = inner_start + e;
        out.push(Elem {
            start: s,
            inner: (inner_start, inner_end),
        });
        pos = inner_end + close.len();
    }
    Ok(out)
}

/// The first `<tag>` inside `text[from..to]`.
pub fn find_one(text: &str, tag: &str, from: usize, to: usize) -> Result<Option<Elem>, usize> {
    Ok(find_all(text, tag, from, to)?.into_iter().next())
}

/// Trimmed inner text with the predefined entities decoded.
pub fn inner_text(text: &str, e: Elem) -> String {
    text[e.inner.0..e.inner.1]
        .trim()
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&amp;", "&")
}

/// 1-based line number of a byte offset.
pub fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|&&c| c == b'\n')
        .count()
        + 1
}
