//! The streaming rewrite of one page: lol_html puts the widget into the
//! first form the selector matches as the app's bytes pass, and amends a
//! `<meta http-equiv="Content-Security-Policy">` (which only works in the
//! head, before any form) as the header is amended. Output is handed back
//! chunk by chunk; nothing waits for the whole page.
//!
//! Parsing is most of injection's cost (lol_html tracks every element), so
//! it stops once that form has closed: the rest of the page passes through
//! as the app sent it, without a copy. A page costs what its bytes up to the
//! end of the form cost.

use std::borrow::Cow;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex, PoisonError};

use bytes::{Bytes, BytesMut};
use lol_html::html_content::ContentType;
use lol_html::{AsciiCompatibleEncoding, MemorySettings, Selector, send};

use super::csp;
use super::{InjectPage, Outcome};

/// A page needs far less: a larger tag than this is passed through as it
/// is from there on (lol_html's graceful bail-out), never buffered.
const MAX_PARSER_MEMORY: usize = 256 * 1024;

/// The parser is fed this much at a time, so that what follows the form's
/// end is passed through within at most this many bytes.
const SLICE: usize = 512;

/// Where a page may set its policy in markup instead of a header.
static META: LazyLock<Selector> = LazyLock::new(|| {
    "meta[http-equiv]"
        .parse()
        .unwrap_or_else(|e| unreachable!("a fixed selector: {e}"))
});

/// Output the rewriter has produced and not yet handed back.
type Pending = Arc<Mutex<BytesMut>>;

/// One page's rewrite, held by the response body that streams it.
pub struct Rewriter {
    /// `None` once the rewriter has ended or bailed out: what remains of the
    /// page passes through unchanged.
    html: Option<send::HtmlRewriter<'static, Sink>>,
    pending: Pending,
    forms: Arc<AtomicUsize>,
    /// Set when the injected form's end tag has passed.
    form_closed: Arc<AtomicBool>,
    page: Arc<InjectPage>,
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

impl Rewriter {
    pub(super) fn new(
        page: Arc<InjectPage>,
        encoding: AsciiCompatibleEncoding,
        nonce: Option<String>,
    ) -> Self {
        let pending: Pending = Arc::default();
        let forms = Arc::new(AtomicUsize::new(0));
        // What the handlers insert is the page's own, shared: only a nonce
        // makes a response's script tags its own.
        let (for_form, for_meta) = (page.clone(), page.clone());
        let nonced = nonce.map(|n| page.scripts(Some(&n)));
        let count = forms.clone();
        let form_closed = Arc::new(AtomicBool::new(false));
        let closed = form_closed.clone();
        let settings = send::Settings::new_send()
            .append_element_content_handler((
                Cow::Borrowed(&page.rule.form),
                send::ElementContentHandlers::default().element(
                    move |form: &mut send::Element<'_, '_>| {
                        if count.fetch_add(1, Ordering::Relaxed) > 0 {
                            return Ok(());
                        }
                        form.append(&for_form.markup, ContentType::Html);
                        let scripts = nonced.as_deref().unwrap_or(&for_form.scripts);
                        form.append(scripts, ContentType::Html);
                        let closed = closed.clone();
                        // A form that is never closed explicitly keeps the
                        // parser going to the end of the page.
                        let _ = form.on_end_tag(Box::new(move |_end| {
                            closed.store(true, Ordering::Relaxed);
                            Ok(())
                        }));
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
            html: Some(send::HtmlRewriter::new(settings, Sink(pending.clone()))),
            pending,
            forms,
            form_closed,
            page,
        }
    }

    /// The rewritten bytes for `chunk` so far (possibly none yet: lol_html
    /// holds an unfinished tag until it ends), then what passes through
    /// untouched once parsing has stopped.
    pub fn feed(&mut self, chunk: Bytes) -> (Bytes, Bytes) {
        let mut at = 0;
        while at < chunk.len() {
            let Some(html) = &mut self.html else { break };
            let end = (at + SLICE).min(chunk.len());
            if let Err(e) = html.write(&chunk[at..end]) {
                // Bailed out gracefully: what it held is already in the
                // output, and the rest passes through.
                self.html = None;
                self.page.bailed_out(&e);
            }
            at = end;
            if self.form_closed.load(Ordering::Relaxed) {
                // Flushes what it holds; the form is done.
                self.finish_parsing();
            }
        }
        (self.take(), chunk.slice(at..))
    }

    /// The last bytes, once the app's body has ended.
    pub fn finish(&mut self) -> Bytes {
        self.finish_parsing();
        self.take()
    }

    fn finish_parsing(&mut self) {
        let Some(html) = self.html.take() else { return };
        if let Err(e) = html.end() {
            self.page.bailed_out(&e);
        }
        let outcome = if self.forms.load(Ordering::Relaxed) == 0 {
            Outcome::Unmatched
        } else {
            Outcome::Injected
        };
        self.page.count(outcome);
    }

    fn take(&self) -> Bytes {
        lock(&self.pending).split().freeze()
    }
}
