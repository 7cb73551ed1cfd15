//! The streaming rewrite of one page: lol_html puts the widget at the start
//! of the first form the selector matches as the app's bytes pass, and
//! amends a `<meta http-equiv="Content-Security-Policy">` (which only works
//! in the head, before any form) as the header is amended. Output is handed
//! back chunk by chunk; nothing waits for the whole page.
//!
//! Parsing is most of injection's cost (lol_html tracks every element), so
//! it stops once that form's start tag has passed: the rest of the page,
//! the form's own fields with it, passes through as the app sent it, without
//! a copy. To stop right there, the parser is fed up to each `<form` start
//! tag in turn (found by a byte search, which only chooses where to cut: the
//! parser still decides what is markup).
//!
//! Most pages start the same way on every view (a head, a navigation bar, a
//! static form tag), so the last parse is remembered: the bytes fed and what
//! they became. An answer that starts with exactly those bytes gets the same
//! output without a parse, as a parse of the same bytes is bound to give it;
//! the first byte that differs sends the page through the parser. A page
//! whose policy carries a nonce gets nonced script tags of its own, so it is
//! neither served from nor remembered.

use std::borrow::Cow;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex, PoisonError};

use bytes::{Bytes, BytesMut};
use lol_html::html_content::ContentType;
use lol_html::{AsciiCompatibleEncoding, MemorySettings, Selector, send};
use memchr::memmem;

use super::csp;
use super::{InjectPage, Outcome};

/// A page needs far less: a larger tag than this is passed through as it
/// is from there on (lol_html's graceful bail-out), never buffered.
const MAX_PARSER_MEMORY: usize = 256 * 1024;

/// The longest start of a page remembered (and held while compared).
const MAX_REMEMBERED: usize = 64 * 1024;

/// Where a page may set its policy in markup instead of a header.
static META: LazyLock<Selector> = LazyLock::new(|| {
    "meta[http-equiv]"
        .parse()
        .unwrap_or_else(|e| unreachable!("a fixed selector: {e}"))
});

/// The start of the last page parsed for an `[[inject]]` rule, through the
/// end of its parse, and the bytes the rewrite made of it.
#[derive(Debug)]
pub struct Remembered {
    encoding: AsciiCompatibleEncoding,
    input: Bytes,
    output: Bytes,
}

/// Output the rewriter has produced and not yet handed back.
type Pending = Arc<Mutex<BytesMut>>;

/// One page's rewrite, held by the response body that streams it.
pub struct Rewriter {
    state: State,
    page: Arc<InjectPage>,
}

enum State {
    /// Comparing the page's start with the remembered one; the app's bytes
    /// compared so far are held until it is known which way the page goes.
    Recalling {
        last: Arc<Remembered>,
        held: Vec<Bytes>,
        matched: usize,
    },
    Parsing(Box<Parse>),
    /// What remains of the page passes through unchanged.
    Done,
}

impl std::fmt::Debug for Rewriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rewriter")
            .field("page", &self.page.rule.route.origin)
            .finish_non_exhaustive()
    }
}

struct Sink(Pending);

impl lol_html::OutputSink for Sink {
    fn handle_chunk(&mut self, chunk: &[u8]) {
        lock(&self.0).extend_from_slice(chunk);
    }
}

fn lock(pending: &Pending) -> std::sync::MutexGuard<'_, BytesMut> {
    // Only this rewriter's own calls take the lock: it is never contended.
    pending.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A page going through lol_html.
struct Parse {
    html: send::HtmlRewriter<'static, Sink>,
    pending: Pending,
    forms: Arc<AtomicUsize>,
    encoding: AsciiCompatibleEncoding,
    /// Kept while the page's answer may be remembered.
    record: Option<Record>,
}

/// What a parse was fed and what came out, while under [`MAX_REMEMBERED`].
#[derive(Default)]
struct Record {
    inputs: Vec<Bytes>,
    outputs: Vec<Bytes>,
    fed: usize,
}

impl Rewriter {
    pub(super) fn new(
        page: Arc<InjectPage>,
        encoding: AsciiCompatibleEncoding,
        nonce: Option<String>,
    ) -> Self {
        let last = nonce
            .is_none()
            .then(|| page.last.load_full())
            .flatten()
            .filter(|last| last.encoding == encoding);
        let state = match last {
            Some(last) => State::Recalling {
                last,
                held: Vec::new(),
                matched: 0,
            },
            None => State::Parsing(Box::new(Parse::new(&page, encoding, nonce))),
        };
        Self { state, page }
    }

    /// The rewritten bytes for `chunk` so far (possibly none yet: lol_html
    /// holds an unfinished tag until it ends, and a page's start is held
    /// while compared), then what passes through untouched from here on.
    pub fn feed(&mut self, chunk: Bytes) -> (Bytes, Bytes) {
        match &mut self.state {
            State::Done => (Bytes::new(), chunk),
            State::Parsing(_) => self.parse(chunk),
            State::Recalling {
                last,
                held,
                matched,
            } => {
                let want = &last.input[*matched..];
                let n = want.len().min(chunk.len());
                if want[..n] != chunk[..n] {
                    // A different page: parse it from its first byte.
                    let held = std::mem::take(held);
                    let parse = Parse::new(&self.page, last.encoding, None);
                    self.state = State::Parsing(Box::new(parse));
                    return self.parse_all(held.into_iter().chain([chunk]));
                }
                *matched += n;
                if *matched < last.input.len() {
                    held.push(chunk);
                    return (Bytes::new(), Bytes::new());
                }
                let output = last.output.clone();
                self.state = State::Done;
                self.page.count(Outcome::Injected);
                (output, chunk.slice(n..))
            }
        }
    }

    /// The last bytes, once the app's body has ended.
    pub fn finish(&mut self) -> Bytes {
        match std::mem::replace(&mut self.state, State::Done) {
            State::Done => Bytes::new(),
            State::Parsing(parse) => parse.finish(&self.page),
            State::Recalling { last, held, .. } => {
                // The page ended within the remembered start: parse it.
                let parse = Parse::new(&self.page, last.encoding, None);
                self.state = State::Parsing(Box::new(parse));
                let (out, untouched) = self.parse_all(held);
                let last = self.finish();
                [out, untouched, last].concat().into()
            }
        }
    }

    /// [`Self::parse`] over several chunks: the output, then what passes
    /// through untouched.
    fn parse_all(&mut self, chunks: impl IntoIterator<Item = Bytes>) -> (Bytes, Bytes) {
        let (mut out, mut untouched) = (BytesMut::new(), BytesMut::new());
        for chunk in chunks {
            let (o, u) = self.parse(chunk);
            out.extend_from_slice(&o);
            untouched.extend_from_slice(&u);
        }
        (out.freeze(), untouched.freeze())
    }

    /// Feeds `chunk` to the parser up to the slice in which the form's
    /// start tag passed; stops parsing there.
    fn parse(&mut self, chunk: Bytes) -> (Bytes, Bytes) {
        let State::Parsing(parse) = &mut self.state else {
            return (Bytes::new(), chunk);
        };
        let mut at = 0;
        while at < chunk.len() {
            let end = at + through_form_start_tag(&chunk[at..]);
            if let Err(e) = parse.html.write(&chunk[at..end]) {
                // Bailed out gracefully: what it held is already in the
                // output, and the rest passes through. (The rewriter
                // cannot be ended after an error.)
                self.page.bailed_out(&e);
                let out = lock(&parse.pending).split().freeze();
                self.state = State::Done;
                return (out, chunk.slice(end..));
            }
            parse.recorded(chunk.slice(at..end));
            at = end;
            if parse.forms.load(Ordering::Relaxed) > 0 {
                let State::Parsing(parse) = std::mem::replace(&mut self.state, State::Done) else {
                    unreachable!("matched above")
                };
                return (parse.finish(&self.page), chunk.slice(at..));
            }
        }
        (parse.take(), Bytes::new())
    }
}

impl Parse {
    fn new(
        page: &Arc<InjectPage>,
        encoding: AsciiCompatibleEncoding,
        nonce: Option<String>,
    ) -> Self {
        let pending: Pending = Arc::new(Mutex::new(BytesMut::with_capacity(8 * 1024)));
        let forms = Arc::new(AtomicUsize::new(0));
        // What the handlers insert is the page's own, shared: only a nonce
        // makes a response's script tags its own.
        let (for_form, for_meta) = (page.clone(), page.clone());
        let record = nonce.is_none().then(Record::default);
        let nonced = nonce.map(|n| page.scripts(Some(&n)));
        let count = forms.clone();
        let settings = send::Settings::new_send()
            .append_element_content_handler((
                Cow::Borrowed(&page.rule.form),
                send::ElementContentHandlers::default().element(
                    move |form: &mut send::Element<'_, '_>| {
                        if count.fetch_add(1, Ordering::Relaxed) > 0 {
                            return Ok(());
                        }
                        let scripts = nonced.as_deref().unwrap_or(&for_form.scripts);
                        form.prepend(scripts, ContentType::Html);
                        form.prepend(&for_form.markup, ContentType::Html);
                        Ok(())
                    },
                ),
            ))
            .append_element_content_handler((
                Cow::Borrowed(&*META),
                send::ElementContentHandlers::default().element(
                    move |meta: &mut send::Element<'_, '_>| {
                        let is_csp = meta.get_attribute("http-equiv").is_some_and(|v| {
                            v.trim().eq_ignore_ascii_case("content-security-policy")
                        });
                        if let (true, Some(policy)) = (is_csp, meta.get_attribute("content")) {
                            meta.set_attribute("content", &csp::amend(&policy, &for_meta.sources))?;
                        }
                        Ok(())
                    },
                ),
            ))
            .with_encoding(encoding)
            .with_memory_settings(
                MemorySettings::new()
                    .with_max_allowed_memory_usage(MAX_PARSER_MEMORY)
                    .with_graceful_bail_out_on_memory_limit_exceeded(true),
            )
            // Non-conforming markup is passed on rather than refused: the
            // page is the app's, and a form missed is served unchanged.
            .with_strict(false)
            .with_graceful_bail_out_on_content_handler_error(true);
        Self {
            html: send::HtmlRewriter::new(settings, Sink(pending.clone())),
            pending,
            forms,
            encoding,
            record,
        }
    }

    fn recorded(&mut self, input: Bytes) {
        let Some(record) = &mut self.record else {
            return;
        };
        record.fed += input.len();
        record.inputs.push(input);
        if record.fed > MAX_REMEMBERED {
            self.record = None;
        }
    }

    /// The output so far.
    fn take(&mut self) -> Bytes {
        let out = lock(&self.pending).split().freeze();
        if let Some(record) = &mut self.record {
            record.outputs.push(out.clone());
        }
        out
    }

    /// Ends the parse: its last output. A page whose form was found is
    /// remembered for the next.
    fn finish(self, page: &InjectPage) -> Bytes {
        let Parse {
            html,
            pending,
            forms,
            encoding,
            mut record,
        } = self;
        if let Err(e) = html.end() {
            page.bailed_out(&e);
            record = None;
        }
        let out = lock(&pending).split().freeze();
        if forms.load(Ordering::Relaxed) == 0 {
            page.count(Outcome::Unmatched);
            return out;
        }
        page.count(Outcome::Injected);
        if let Some(mut record) = record {
            record.outputs.push(out.clone());
            page.last.store(Some(Arc::new(Remembered {
                encoding,
                input: record.inputs.concat().into(),
                output: record.outputs.concat().into(),
            })));
        }
        out
    }
}

/// How much of `bytes` to feed next: through the `>` after the first
/// `<form` or `<FORM` start tag's name, or all of it. Whether that is the
/// form the selector wants (or markup at all) is the parser's call; a `>`
/// within a quoted attribute only makes the cut early, and a tag in mixed
/// case only makes it late.
fn through_form_start_tag(bytes: &[u8]) -> usize {
    static LOWER: LazyLock<memmem::Finder<'static>> =
        LazyLock::new(|| memmem::Finder::new("<form"));
    static UPPER: LazyLock<memmem::Finder<'static>> =
        LazyLock::new(|| memmem::Finder::new("<FORM"));
    let mut from = 0;
    while from < bytes.len() {
        let rest = &bytes[from..];
        let found = match (LOWER.find(rest), UPPER.find(rest)) {
            (Some(a), Some(b)) => a.min(b),
            (Some(a), None) | (None, Some(a)) => a,
            (None, None) => break,
        };
        let at = from + found;
        let ends_name = bytes
            .get(at + 5)
            .is_some_and(|b| b.is_ascii_whitespace() || matches!(b, b'>' | b'/'));
        if ends_name {
            return memchr::memchr(b'>', &bytes[at..]).map_or(bytes.len(), |gt| at + gt + 1);
        }
        from = at + 5;
    }
    bytes.len()
}

#[cfg(test)]
mod tests {
    use super::through_form_start_tag;

    #[test]
    fn the_parser_is_fed_through_each_form_start_tag_in_turn() {
        let page = b"<p>a</p><formx><FORM\taction=x>b<form>tail";
        let first = through_form_start_tag(page);
        assert_eq!(&page[..first], b"<p>a</p><formx><FORM\taction=x>");
        let second = first + through_form_start_tag(&page[first..]);
        assert_eq!(&page[first..second], b"b<form>");
        // No start tag, or one cut off before its `>`: the whole slice.
        assert_eq!(through_form_start_tag(b"<p></form>"), 10);
        assert_eq!(through_form_start_tag(b"<p><form a"), 10);
        assert_eq!(through_form_start_tag(b"<form"), 5);
        // Mixed case is left to the parser.
        assert_eq!(through_form_start_tag(b"<Form>x"), 7);
    }
}
